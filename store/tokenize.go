package store

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/confabhq/confab/mesh"
)

// Tokenizer limits; doc.go ("Search") describes the rules. Changing the rules
// changes which postings an envelope has, so it must bump indexVersion (the
// index is rebuilt on open, and deletion re-tokenizes stored envelopes to find
// their postings).
const (
	minTokenRunes     = 2
	maxTokenBytes     = 64
	maxTokensPerEnv   = 512
	maxQueryBytes     = 256
	maxQueryTerms     = 8
	maxPrefixExpanded = 128
)

// indexed reports whether envelopes of channel are indexed for search.
// Private channels ("~...") carry ciphertext, and their names and who speaks
// in them are not for search either.
func indexed(channel string) bool { return !strings.HasPrefix(channel, "~") }

// envelopeTokens returns the distinct tokens of e's Name and Content (at most
// maxTokensPerEnv, first occurrences first), or nil if e's channel is not
// indexed.
func envelopeTokens(e *mesh.Envelope) []string {
	return appendEnvelopeTokens(nil, e, make(map[string]struct{}))
}

// appendEnvelopeTokens appends e's tokens (as envelopeTokens) to dst, using
// seen (cleared first) as scratch.
func appendEnvelopeTokens(dst []string, e *mesh.Envelope, seen map[string]struct{}) []string {
	if !indexed(e.Channel) {
		return dst
	}
	clear(seen)
	n := len(dst)
	dst = tokenize(e.Name, seen, dst, n+maxTokensPerEnv)
	return tokenize(e.Content, seen, dst, n+maxTokensPerEnv)
}

// tokenize appends to dst the tokens of s not yet in seen, until dst holds
// limit tokens. A token is a maximal run of Unicode letters and digits,
// lowercased, of at least minTokenRunes runes and at most maxTokenBytes bytes
// (longer runs are dropped, not truncated: they are hashes, keys and base64,
// not words).
func tokenize(s string, seen map[string]struct{}, dst []string, limit int) []string {
	// The token being read, lowercased; past maxTokenBytes it is dropped
	// anyway, so it stops growing there. ASCII, most text, skips the
	// unicode tables.
	var buf [maxTokenBytes + utf8.UTFMax]byte
	b := buf[:0]
	runes := 0
	emit := func() {
		if runes >= minTokenRunes && len(b) <= maxTokenBytes {
			if _, ok := seen[string(b)]; !ok { // no allocation for a repeat
				t := string(b)
				seen[t] = struct{}{}
				dst = append(dst, t)
			}
		}
		b = b[:0]
		runes = 0
	}
	for i := 0; i < len(s) && len(dst) < limit; {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			default:
				emit()
				continue
			}
			if len(b) <= maxTokenBytes {
				b = append(b, c)
			}
			runes++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if len(b) <= maxTokenBytes {
				b = utf8.AppendRune(b, unicode.ToLower(r))
			}
			runes++
			continue
		}
		emit()
	}
	if len(dst) < limit {
		emit()
	}
	return dst
}

// query is a parsed search query.
type query struct {
	terms  []string // exact words, distinct
	prefix string   // the last word with a trailing '*', or ""
}

// parseQuery splits q into words with the tokenizer's rules. A '*' right
// after the last word (trailing spaces allowed) makes it a prefix, unless the
// same word also appears as an exact word. Words that the tokenizer would drop
// (one rune, too long) are ignored; a query with no word left, or with more
// than maxQueryTerms distinct words, is invalid.
func parseQuery(q string) (query, error) {
	if len(q) > maxQueryBytes {
		return query{}, errInvalidQuery("query is %d bytes, limit %d", len(q), maxQueryBytes)
	}
	if !utf8.ValidString(q) {
		return query{}, errInvalidQuery("query is not UTF-8")
	}
	var words []string // every token, in order, repeats kept
	seen := make(map[string]struct{})
	for _, f := range strings.FieldsFunc(q, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		clear(seen)
		words = tokenize(f, seen, words, len(words)+1)
	}
	var pq query
	t := strings.TrimRightFunc(q, unicode.IsSpace)
	if last, ok := strings.CutSuffix(t, "*"); ok && len(words) > 0 {
		r, _ := utf8.DecodeLastRuneInString(last)
		lw := words[len(words)-1]
		// The '*' must follow the last word directly, and that word must be
		// the tail of the query (not a dropped one-letter word).
		if (unicode.IsLetter(r) || unicode.IsDigit(r)) && strings.HasSuffix(strings.ToLower(last), lw) {
			pq.prefix = lw
			words = words[:len(words)-1]
		}
	}
	seen = make(map[string]struct{})
	for _, w := range words {
		if _, ok := seen[w]; !ok {
			seen[w] = struct{}{}
			pq.terms = append(pq.terms, w)
		}
	}
	if _, ok := seen[pq.prefix]; ok {
		pq.prefix = "" // an exact word is stricter than its prefix
	}
	n := len(pq.terms)
	if pq.prefix != "" {
		n++
	}
	switch {
	case n == 0:
		return query{}, errInvalidQuery("no searchable word (words need at least %d letters or digits)", minTokenRunes)
	case n > maxQueryTerms:
		return query{}, errInvalidQuery("more than %d distinct words", maxQueryTerms)
	}
	return pq, nil
}
