package mesh

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxTrackedAuthors bounds the per-author limiter table; idle entries are
// evicted first when it is full.
const maxTrackedAuthors = 65536

// authorRates is a per-author token bucket for the live path.
type authorRates struct {
	perSec float64
	burst  int

	mu sync.Mutex // guards m
	m  map[string]*authorRate
}

type authorRate struct {
	lim  *rate.Limiter
	last time.Time
}

func newAuthorRates(perSec float64, burst int) *authorRates {
	return &authorRates{perSec: perSec, burst: burst, m: map[string]*authorRate{}}
}

func (a *authorRates) allow(author string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.m[author]
	if !ok {
		if len(a.m) >= maxTrackedAuthors {
			a.evict(now)
		}
		r = &authorRate{lim: rate.NewLimiter(rate.Limit(a.perSec), a.burst)}
		a.m[author] = r
	}
	r.last = now
	return r.lim.AllowN(now, 1)
}

// evict drops entries idle long enough to have refilled their bucket.
func (a *authorRates) evict(now time.Time) {
	idle := time.Duration(float64(a.burst)/a.perSec*float64(time.Second)) + time.Second
	for k, r := range a.m {
		if now.Sub(r.last) > idle {
			delete(a.m, k)
		}
	}
	if len(a.m) >= maxTrackedAuthors {
		for k := range a.m { // all busy: drop an arbitrary one
			delete(a.m, k)
			break
		}
	}
}
