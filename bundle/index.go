package bundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// receivedDir is the index of received bundles inside a store directory.
const receivedDir = "received"

// maxRecordLen bounds one index file.
const maxRecordLen = MaxOfferLen + 8<<10

// Received is the index entry of one received bundle: storeDir/received/<ID>.json.
type Received struct {
	ID       string    `json:"id"`                 // the bundle's sha256, = Offer.Hash
	From     string    `json:"from"`               // sender's peer id
	Offer    *Offer    `json:"offer"`              // the signed offer it arrived with
	Received time.Time `json:"received"`           // when the bytes were verified
	Repo     string    `json:"repo,omitempty"`     // absolute path of the repository it was imported into
	Branch   string    `json:"branch,omitempty"`   // branch Apply created, if any
	Envelope string    `json:"envelope,omitempty"` // id of the mesh envelope that carried the offer
}

func (r *Received) validate() error {
	if r.Offer == nil {
		return fmt.Errorf("%w: no offer", ErrBadOffer)
	}
	if err := r.Offer.Validate(); err != nil {
		return err
	}
	if r.ID != r.Offer.Hash {
		return fmt.Errorf("%w: id %q is not the offer's hash", ErrBadOffer, trunc(r.ID))
	}
	return validSender(r.From)
}

// Record writes (or replaces) the index entry for r atomically.
func Record(storeDir string, r Received) error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("bundle: record: %w", err)
	}
	dir := filepath.Join(storeDir, receivedDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bundle: record %s: %w", r.Offer.ShortHash(), err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("bundle: record %s: %w", r.Offer.ShortHash(), err)
	}
	tmp, err := os.CreateTemp(dir, ".rec-*")
	if err != nil {
		return fmt.Errorf("bundle: record %s: %w", r.Offer.ShortHash(), err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("bundle: record %s: %w", r.Offer.ShortHash(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("bundle: record %s: %w", r.Offer.ShortHash(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("bundle: record %s: %w", r.Offer.ShortHash(), err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, r.ID+".json")); err != nil {
		return fmt.Errorf("bundle: record %s: %w", r.Offer.ShortHash(), err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("bundle: record %s: %w", r.Offer.ShortHash(), err)
	}
	return nil
}

// Load returns the index entry whose ID is id. Errors wrap ErrNotFound.
func Load(storeDir, id string) (*Received, error) {
	if !ValidHash(id) {
		return nil, fmt.Errorf("bundle: load %q: %w", trunc(id), ErrNotFound)
	}
	r, err := readRecord(filepath.Join(storeDir, receivedDir, id+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("bundle: load %s: %w", id[:12], ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("bundle: load %s: %w", id[:12], err)
	}
	if r.ID != id {
		return nil, fmt.Errorf("bundle: load %s: %w: id mismatch", id[:12], ErrBadOffer)
	}
	return r, nil
}

func readRecord(path string) (*Received, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecordLen+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxRecordLen {
		return nil, fmt.Errorf("%w: index entry too large", ErrTooLarge)
	}
	var r Received
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// List returns every index entry in storeDir, oldest first. An unreadable
// entry does not hide the others: List returns what it could read together
// with an error naming each entry it skipped. A store with no index yields
// no entries and no error.
func List(storeDir string) ([]Received, error) {
	ents, err := os.ReadDir(filepath.Join(storeDir, receivedDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bundle: list: %w", err)
	}
	var out []Received
	var errs []error
	for _, e := range ents {
		name := e.Name()
		id, ok := strings.CutSuffix(name, ".json")
		if !ok || !ValidHash(id) || !e.Type().IsRegular() {
			continue
		}
		r, err := readRecord(filepath.Join(storeDir, receivedDir, name))
		if err == nil && r.ID != id {
			err = fmt.Errorf("%w: id mismatch", ErrBadOffer)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bundle: list %s: %w", id[:12], err))
			continue
		}
		out = append(out, *r)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Received.Equal(out[j].Received) {
			return out[i].Received.Before(out[j].Received)
		}
		return out[i].ID < out[j].ID
	})
	return out, errors.Join(errs...)
}
