package faults

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/confabhq/confab/wsgateway"
)

// TestHistoryPagingComplete checks that a client paging a channel longer
// than one gateway page through History gets every record once, oldest
// first: with the suite's page size and with the largest page the protocol
// allows (wsgateway.MaxHistoryLimit).
func TestHistoryPagingComplete(t *testing.T) {
	noLeaks(t)
	f := startGateway(t, func(c *gwConfig) {})
	const n = 2500
	var wg sync.WaitGroup
	for w := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 5 {
				if _, err := f.a.mesh.Send(context.Background(), gwChan, "msg", fmt.Sprintf("p-%05d", i), ""); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	direct := f.a.history(t, gwChan)
	c, err := f.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(direct) != n {
		t.Fatalf("stored %d, want %d", len(direct), n)
	}
	for _, limit := range []int{historyPage, wsgateway.MaxHistoryLimit} {
		paged, err := historyPaged(context.Background(), c, gwChan, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(paged) != n {
			t.Errorf("paging with limit %d returned %d records, want %d", limit, len(paged), n)
			continue
		}
		for i := range paged {
			if paged[i].Cursor != direct[i].Cursor {
				t.Fatalf("limit %d: record %d: paged cursor %s, stored %s", limit, i, paged[i].Cursor, direct[i].Cursor)
			}
		}
	}
}
