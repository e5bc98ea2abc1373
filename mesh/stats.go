package mesh

import (
	"reflect"
	"sync/atomic"
)

func (s *Stats) add(field *uint64, n uint64) { atomic.AddUint64(field, n) }

// snapshot copies every counter atomically, field by field.
func (s *Stats) snapshot() Stats {
	var out Stats
	src := reflect.ValueOf(s).Elem()
	dst := reflect.ValueOf(&out).Elem()
	for i := 0; i < src.NumField(); i++ {
		p := src.Field(i).Addr().Interface().(*uint64)
		dst.Field(i).SetUint(atomic.LoadUint64(p))
	}
	return out
}
