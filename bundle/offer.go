package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of an offer. ParseOffer refuses anything outside them, and Create
// refuses to produce an offer that ParseOffer would refuse.
const (
	// MaxBundleSize caps the size of one bundle (2 GiB).
	MaxBundleSize = 2 << 30
	// MaxRefs caps the refs one offer may carry.
	MaxRefs = 256
	// MaxRefLen caps a full ref name such as "refs/heads/main".
	MaxRefLen = 200
	// MaxRepoLen caps the repository display name, in bytes.
	MaxRepoLen = 128
	// MaxNoteLen caps the free-text note, in bytes.
	MaxNoteLen = 4096
	// MaxOfferLen caps the JSON encoding of an offer. It equals
	// mesh.MaxContentLen, so every valid offer fits in one envelope.
	MaxOfferLen = 64 << 10
)

// OfferType is the "type" of an offer's JSON and the kind of the signed mesh
// envelope that carries it.
const OfferType = "bundle-offer"

// offerVersion is the only version ParseOffer accepts.
const offerVersion = 1

// Errors returned by this package. Match them with errors.Is.
var (
	ErrBadOffer     = errors.New("bundle: invalid offer")
	ErrBadRev       = errors.New("bundle: invalid revision")
	ErrBadRef       = errors.New("bundle: invalid ref name")
	ErrBadSender    = errors.New("bundle: invalid sender peer id")
	ErrTooLarge     = errors.New("bundle: too large")
	ErrHashMismatch = errors.New("bundle: content does not match the offer's hash")
	ErrSizeMismatch = errors.New("bundle: size does not match the offer")
	ErrHeadsDiffer  = errors.New("bundle: bundle heads differ from the offer's refs")
	ErrCorrupt      = errors.New("bundle: corrupt or unverifiable bundle")
	ErrNoBranch     = errors.New("bundle: HEAD is not on a branch")
	ErrNotImported  = errors.New("bundle: not imported")
	ErrExists       = errors.New("bundle: branch already exists")
	ErrUnavailable  = errors.New("bundle: not offered to this peer")
	ErrBusy         = errors.New("bundle: sender busy")
	ErrInProgress   = errors.New("bundle: fetch of this bundle already in progress")
	ErrNotFound     = errors.New("bundle: not found")
	ErrProtocol     = errors.New("bundle: protocol error")
)

// Ref is one ref carried by a bundle: its full name and the object it points
// at (a commit, or a tag object for an annotated tag).
type Ref struct {
	Name   string `json:"name"`
	Commit string `json:"commit"`
}

// Offer is the wire form of a bundle offer. It travels as the content of a
// signed mesh envelope of kind OfferType; the envelope's signature is what
// authenticates the sender, and the offer's Hash binds that signature to the
// bundle's bytes.
type Offer struct {
	Type    string `json:"type"`    // OfferType
	V       int    `json:"v"`       // 1
	Hash    string `json:"hash"`    // hex sha256 of the bundle file
	Size    int64  `json:"size"`    // bytes, 1..MaxBundleSize
	Refs    []Ref  `json:"refs"`    // 1..MaxRefs, each refs/heads/* or refs/tags/*
	Repo    string `json:"repo"`    // display name of the source repository
	Note    string `json:"note"`    // free text from the sender
	Created int64  `json:"created"` // sender's clock, unix ms
}

// ParseOffer decodes and validates an offer from untrusted bytes.
// Errors wrap ErrBadOffer, ErrBadRef or ErrTooLarge.
func ParseOffer(b []byte) (*Offer, error) {
	if len(b) > MaxOfferLen {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxOfferLen)
	}
	var o Offer
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&o); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data", ErrBadOffer)
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &o, nil
}

// Marshal returns the offer's JSON after validating it.
func (o *Offer) Marshal() ([]byte, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("bundle: marshal offer: %w", err)
	}
	if len(b) > MaxOfferLen {
		return nil, fmt.Errorf("%w: offer is %d bytes, limit %d", ErrTooLarge, len(b), MaxOfferLen)
	}
	return b, nil
}

// Validate checks every field of the offer against the limits above.
func (o *Offer) Validate() error {
	switch {
	case o.Type != OfferType:
		return fmt.Errorf("%w: type %q", ErrBadOffer, trunc(o.Type))
	case o.V != offerVersion:
		return fmt.Errorf("%w: version %d", ErrBadOffer, o.V)
	case !ValidHash(o.Hash):
		return fmt.Errorf("%w: hash %q", ErrBadOffer, trunc(o.Hash))
	case o.Size <= 0:
		return fmt.Errorf("%w: size %d", ErrBadOffer, o.Size)
	case o.Size > MaxBundleSize:
		return fmt.Errorf("%w: size %d, limit %d", ErrTooLarge, o.Size, MaxBundleSize)
	case len(o.Refs) == 0:
		return fmt.Errorf("%w: no refs", ErrBadOffer)
	case len(o.Refs) > MaxRefs:
		return fmt.Errorf("%w: %d refs, limit %d", ErrTooLarge, len(o.Refs), MaxRefs)
	case len(o.Repo) > MaxRepoLen || !cleanText(o.Repo, false):
		return fmt.Errorf("%w: repo name", ErrBadOffer)
	case len(o.Note) > MaxNoteLen || !cleanText(o.Note, true):
		return fmt.Errorf("%w: note", ErrBadOffer)
	case o.Created <= 0:
		return fmt.Errorf("%w: created", ErrBadOffer)
	}
	seen := make(map[string]bool, len(o.Refs))
	oidLen := len(o.Refs[0].Commit)
	for _, r := range o.Refs {
		if err := ValidRefName(r.Name); err != nil {
			return err
		}
		if seen[r.Name] {
			return fmt.Errorf("%w: duplicate ref %q", ErrBadOffer, r.Name)
		}
		seen[r.Name] = true
		if !validOID(r.Commit) || len(r.Commit) != oidLen {
			return fmt.Errorf("%w: object id %q of %s", ErrBadOffer, trunc(r.Commit), r.Name)
		}
	}
	return nil
}

// ShortHash is the first 12 hex digits of the bundle hash; it names the
// bundle's quarantine namespace and its default branch.
func (o *Offer) ShortHash() string { return o.Hash[:12] }

// ValidHash reports whether s is a lowercase hex sha256.
func ValidHash(s string) bool { return len(s) == 64 && isLowerHex(s) }

func validOID(s string) bool { return (len(s) == 40 || len(s) == 64) && isLowerHex(s) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ValidRefName checks a full ref name: "refs/heads/<x>" or "refs/tags/<x>"
// where <x> passes git check-ref-format's rules, implemented here and made
// stricter: printable ASCII only, no component starting with '.' or '-', no
// component ending in ".lock", no "..", "@{", "//", trailing '/' or '.', none
// of ` ~^:?*[\`, and at most MaxRefLen bytes in all. Such a name can neither
// leave the quarantine namespace nor be read by git as an option.
// Errors wrap ErrBadRef.
func ValidRefName(name string) error {
	bad := func(why string) error { return fmt.Errorf("%w: %q: %s", ErrBadRef, trunc(name), why) }
	if len(name) > MaxRefLen {
		return bad("too long")
	}
	var rest string
	switch {
	case strings.HasPrefix(name, "refs/heads/"):
		rest = name[len("refs/heads/"):]
	case strings.HasPrefix(name, "refs/tags/"):
		rest = name[len("refs/tags/"):]
	default:
		return bad("not under refs/heads/ or refs/tags/")
	}
	if err := checkRefTail(rest); err != "" {
		return bad(err)
	}
	return nil
}

// checkRefTail applies the component rules to the part after refs/heads/ or
// refs/tags/, returning a reason or "".
func checkRefTail(s string) string {
	if s == "" {
		return "empty name"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f {
			return "control, space or non-ASCII character"
		}
		if strings.IndexByte(`~^:?*[\`, c) >= 0 {
			return fmt.Sprintf("forbidden character %q", c)
		}
	}
	switch {
	case strings.Contains(s, ".."):
		return `contains ".."`
	case strings.Contains(s, "@{"):
		return `contains "@{"`
	case s == "@":
		return `is "@"`
	case strings.HasSuffix(s, "."):
		return "ends with '.'"
	}
	for _, comp := range strings.Split(s, "/") {
		switch {
		case comp == "":
			return `empty component ("//" or trailing '/')`
		case comp[0] == '.':
			return "component starts with '.'"
		case comp[0] == '-':
			return "component starts with '-'"
		case strings.HasSuffix(comp, ".lock"):
			return `component ends with ".lock"`
		}
	}
	return ""
}

// cleanText reports whether s is UTF-8 without control characters (newline
// and tab allowed when multiline).
func cleanText(s string, multiline bool) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if multiline && (r == '\n' || r == '\t') {
			continue
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || (r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069') {
			return false
		}
	}
	return true
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
