package redact

import (
	"regexp"
	"slices"
	"strings"
)

// Finding is one redacted secret: its kind and its byte range in the input.
type Finding struct {
	Kind  string `json:"kind"`
	Start int    `json:"start"`
	End   int    `json:"end"`
}

// Kinds of secret. An environment variable's value has the kind "env:" + its
// name.
const (
	KindAWS        = "aws-access-key-id"
	KindGitHub     = "github-token"
	KindAnthropic  = "anthropic-key"
	KindOpenAI     = "openai-key"
	KindSlack      = "slack-token"
	KindStripe     = "stripe-key"
	KindGoogle     = "google-api-key"
	KindPrivateKey = "private-key"
	KindJWT        = "jwt"
	KindEnvPrefix  = "env:"
)

// MinEnvValue is the shortest environment value that is redacted: shorter
// values ("1", "true", "yes") would blot out ordinary words.
const MinEnvValue = 8

// secretNameParts make an environment variable's name look secret.
var secretNameParts = []string{"KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH"}

type pattern struct {
	kind string
	re   *regexp.Regexp
	// tail is the set of characters that would continue the token: a match
	// followed by one of them is part of something longer, not this shape.
	// Empty when the pattern is greedy and needs no check.
	tail string
	// ok, if set, filters matches that have the shape but not the substance.
	ok func(string) bool
}

const (
	alnum    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b64url   = alnum + "-_"
	upperNum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)

// patterns are tried in order; on equal spans the earlier kind wins
// (Anthropic before OpenAI: "sk-ant-" is also an "sk-" key).
var patterns = []pattern{
	{kind: KindPrivateKey, re: regexp.MustCompile(`(?s)-----BEGIN[A-Z0-9 ]{0,40} PRIVATE KEY( BLOCK)?-----.*?(?:-----END[A-Z0-9 ]{0,40} PRIVATE KEY( BLOCK)?-----|\z)`)},
	{kind: KindAWS, re: regexp.MustCompile(`\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}`), tail: upperNum},
	{kind: KindGitHub, re: regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})`), tail: b64url},
	{kind: KindAnthropic, re: regexp.MustCompile(`\bsk-ant-[A-Za-z0-9_-]{20,}`)},
	{kind: KindOpenAI, re: regexp.MustCompile(`\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}`), ok: mixed},
	{kind: KindSlack, re: regexp.MustCompile(`\bxox[abprs]-[A-Za-z0-9-]{10,}`), ok: hasDigit},
	{kind: KindStripe, re: regexp.MustCompile(`\b(?:sk|rk)_live_[A-Za-z0-9]{16,}`)},
	{kind: KindGoogle, re: regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}`), tail: b64url},
	{kind: KindJWT, re: regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*`)},
}

// mixed reports whether an "sk-" key has letters and digits in its body:
// prose and kebab-case names ("sk-learn-pipeline-...") have no digits.
func mixed(s string) bool {
	return hasDigit(s) && strings.ContainsAny(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
}

func hasDigit(s string) bool { return strings.ContainsAny(s, "0123456789") }

// Redact returns s with every secret it finds replaced by
// "[REDACTED:<kind>]", and the findings in input order (ranges index s).
// env is the sender's environment as os.Environ returns it: the values of
// variables whose names contain KEY, TOKEN, SECRET, PASSWORD, PASSWD,
// CREDENTIAL or AUTH (any case), at least MinEnvValue bytes long and not an
// absolute path (SSH_AUTH_SOCK, XAUTHORITY), are secrets too.
func Redact(s string, env []string) (string, []Finding) {
	var found []Finding
	for _, p := range patterns {
		for _, m := range p.re.FindAllStringIndex(s, -1) {
			if p.tail != "" && m[1] < len(s) && strings.IndexByte(p.tail, s[m[1]]) >= 0 {
				continue
			}
			if p.ok != nil && !p.ok(s[m[0]:m[1]]) {
				continue
			}
			found = append(found, Finding{Kind: p.kind, Start: m[0], End: m[1]})
		}
	}
	// Every occurrence of a detected secret goes, wherever it stands.
	seen := make(map[string]bool)
	for _, f := range slices.Clone(found) {
		v := s[f.Start:f.End]
		if !seen[v] {
			seen[v] = true
			found = appendAll(found, s, v, f.Kind)
		}
	}
	for _, kv := range env {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || len(val) < MinEnvValue || strings.HasPrefix(val, "/") || !secretName(name) || seen[val] {
			continue
		}
		seen[val] = true
		found = appendAll(found, s, val, KindEnvPrefix+name)
	}
	if len(found) == 0 {
		return s, nil
	}
	found = merge(found)
	var b strings.Builder
	b.Grow(len(s))
	last := 0
	for _, f := range found {
		b.WriteString(s[last:f.Start])
		b.WriteString("[REDACTED:")
		b.WriteString(f.Kind)
		b.WriteString("]")
		last = f.End
	}
	b.WriteString(s[last:])
	return b.String(), found
}

// Kinds lists the distinct kinds of findings, in order of first appearance.
func Kinds(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		if !slices.Contains(out, f.Kind) {
			out = append(out, f.Kind)
		}
	}
	return out
}

func secretName(name string) bool {
	up := strings.ToUpper(name)
	for _, p := range secretNameParts {
		if strings.Contains(up, p) {
			return true
		}
	}
	return false
}

// appendAll adds a finding for every occurrence of v in s.
func appendAll(found []Finding, s, v, kind string) []Finding {
	for i := 0; ; {
		j := strings.Index(s[i:], v)
		if j < 0 {
			return found
		}
		found = append(found, Finding{Kind: kind, Start: i + j, End: i + j + len(v)})
		i += j + 1
	}
}

// merge sorts findings by start (longest first on ties, then pattern order as
// appended) and folds overlapping ones into the first, so no byte of any
// finding survives.
func merge(fs []Finding) []Finding {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		return b.End - a.End
	})
	out := fs[:1]
	for _, f := range fs[1:] {
		last := &out[len(out)-1]
		if f.Start < last.End {
			last.End = max(last.End, f.End)
			continue
		}
		out = append(out, f)
	}
	return out
}
