package mesh

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestBeaconInterval(t *testing.T) {
	for _, tc := range []struct {
		tick    time.Duration
		members int
		want    time.Duration
	}{
		{5 * time.Second, 1, 5 * time.Second},
		{5 * time.Second, presenceMembers, 5 * time.Second},
		{5 * time.Second, 250, 12500 * time.Millisecond},
		{5 * time.Second, 1000, 50 * time.Second},
		{5 * time.Second, 1_000_000, maxBeaconInterval}, // capped: the rate grows again beyond
		{time.Hour, 1000, time.Hour},                    // a tick above the cap stays the tick
		{500 * time.Millisecond, 3, 500 * time.Millisecond},
	} {
		if got := beaconInterval(tc.tick, tc.members); got != tc.want {
			t.Errorf("beaconInterval(%v, %d) = %v, want %v", tc.tick, tc.members, got, tc.want)
		}
	}
	// All members together stay within presenceMembers beacons per tick.
	for _, n := range []int{100, 101, 250, 1000, 10000} {
		perTick := float64(n) * float64(5*time.Second) / float64(beaconInterval(5*time.Second, n))
		if perTick > presenceMembers+1e-9 {
			t.Errorf("%d members send %.1f beacons per tick, want at most %d", n, perTick, presenceMembers)
		}
	}
}

func TestBeaconTTL(t *testing.T) {
	for _, tc := range []struct {
		tick, ttl, interval time.Duration
		want                time.Duration
	}{
		{5 * time.Second, 20 * time.Second, 5 * time.Second, 20 * time.Second},
		{5 * time.Second, 20 * time.Second, 50 * time.Second, 200 * time.Second},
		{500 * time.Millisecond, 3 * time.Second, 500 * time.Millisecond, 3 * time.Second},
		{time.Hour, 2 * time.Hour, 10 * time.Hour, maxBeaconTTL},
		{time.Millisecond, time.Millisecond, time.Millisecond, minBeaconTTL},
	} {
		if got := beaconTTL(tc.tick, tc.ttl, tc.interval); got != tc.want {
			t.Errorf("beaconTTL(%v, %v, %v) = %v, want %v", tc.tick, tc.ttl, tc.interval, got, tc.want)
		}
	}
}

func TestParseBeacon(t *testing.T) {
	many := `"#` + strings.Repeat(`","#`, maxBeaconChannels) + `"`
	for _, tc := range []struct {
		name     string
		content  string
		ok       bool
		ttl      int64
		channels int
	}{
		{"full", `{"name":"atlas","caps":["go"],"status":"available","channels":["#general"],"ttl_ms":20000}`, true, 20000, 1},
		{"older node without ttl", `{"name":"atlas","status":"busy"}`, true, 0, 0},
		{"longest ttl", `{"status":"available","ttl_ms":21600000}`, true, 21600000, 0},
		{"ttl too long", `{"status":"available","ttl_ms":21600001}`, false, 0, 0},
		{"ttl too short", `{"status":"available","ttl_ms":99}`, false, 0, 0},
		{"negative ttl", `{"status":"available","ttl_ms":-1}`, false, 0, 0},
		{"ttl not a number", `{"status":"available","ttl_ms":"1"}`, false, 0, 0},
		{"not json", `available`, false, 0, 0},
		{"too many channels are cut", `{"status":"available","channels":[` + many + `]}`, true, 0, maxBeaconChannels},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := parseBeacon(tc.content)
			if (err == nil) != tc.ok {
				t.Fatalf("parseBeacon error = %v, want ok %v", err, tc.ok)
			}
			if err != nil {
				return
			}
			if b.TTLms != tc.ttl || len(b.Channels) != tc.channels {
				t.Errorf("parseBeacon = ttl %d, %d channels; want %d, %d", b.TTLms, len(b.Channels), tc.ttl, tc.channels)
			}
		})
	}
}

// FuzzParseBeacon: whatever a peer puts in a beacon, an accepted one has a
// bounded ttl and channel list, and survives a round trip.
func FuzzParseBeacon(f *testing.F) {
	for _, b := range []beacon{
		{Name: "atlas", Caps: []string{"go-review"}, Status: StatusAvailable, Channels: []string{"#general", "#review"}, TTLms: 20000},
		{Name: "nova", Status: StatusBusy, TTLms: 200000},
		{Name: "old", Status: statusOffline},
	} {
		j, _ := json.Marshal(b)
		f.Add(string(j))
	}
	f.Add(`{"ttl_ms":1e30}`)
	f.Fuzz(func(t *testing.T, content string) {
		b, err := parseBeacon(content)
		if err != nil {
			return
		}
		if b.TTLms < 0 || b.TTLms > maxBeaconTTL.Milliseconds() || (b.TTLms != 0 && b.TTLms < minBeaconTTL.Milliseconds()) {
			t.Fatalf("accepted ttl_ms %d", b.TTLms)
		}
		if len(b.Channels) > maxBeaconChannels {
			t.Fatalf("accepted %d channels", len(b.Channels))
		}
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseBeacon(string(j))
		if err != nil || again.TTLms != b.TTLms || again.Status != b.Status || len(again.Channels) != len(b.Channels) {
			t.Fatalf("round trip of %s: %+v, %v", j, again, err)
		}
	})
}

func TestVerifyOnce(t *testing.T) {
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	good := &Envelope{Channel: "@" + id.String(), TS: 1, Seq: 1, Kind: "presence", Content: `{"status":"available"}`}
	if err := good.Sign(k); err != nil {
		t.Fatal(err)
	}
	bad := *good
	bad.Sig = append([]byte(nil), good.Sig...)
	bad.Sig[0] ^= 1
	v := newVerifyOnce(2)
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Go(func() { errs[i] = v.verify("good", good) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("copy %d of a good beacon: %v", i, err)
		}
	}
	for range 2 { // a bad verdict is not remembered, and never turns good
		if err := v.verify("bad", &bad); err == nil {
			t.Fatal("a bad signature passed")
		}
	}
	v.verify("a", good)
	v.verify("b", good) // rotates: "good" moves to the old generation
	if !v.known("good") || !v.known("b") {
		t.Error("the previous generation is forgotten too soon")
	}
	v.verify("c", good)
	v.verify("d", good) // rotates again
	if v.known("good") {
		t.Error("memory is not bounded: the id two generations back is still known")
	}
	if err := v.verify("", &bad); err == nil {
		t.Error("an empty id skipped the check")
	}
}
