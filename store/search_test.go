package store

import (
	"errors"
	"slices"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/confabhq/confab/mesh"
)

const privateChannel = "~0123456789abcdef0123456789abcdef"

// searchFixture stores a small corpus in a known order and returns the
// cursor of each envelope by its label.
func searchFixture(t *testing.T, db *DB) map[string]string {
	t.Helper()
	k := newKey(t)
	seq := map[string]uint64{}
	cur := map[string]string{}
	for _, m := range []struct{ label, ch, content string }{
		{"a1", "#a", "Hello world from Go"},
		{"b1", "#b", "hello there, banana"},
		{"a2", "#a", "the quick brown fox"},
		{"a3", "#a", "Hello again, WORLD!"},
		{"b2", "#b", "world peace"},
		{"a4", "#a", "Ünïcödé café naïve 東京 tokyo"},
		{"a5", "#a", "gopher gophers golang"},
		{"p1", privateChannel, "hello secret"},
	} {
		seq[m.ch]++
		e := signed(t, k, m.ch, seq[m.ch], m.content)
		cur[m.label] = appendAll(t, db, e)[0]
	}
	return cur
}

func TestSearch(t *testing.T) {
	db := open(t, "")
	cur := searchFixture(t, db)
	label := map[string]string{}
	for l, c := range cur {
		label[c] = l
	}
	tests := []struct {
		name, query, channel string
		limit                int
		want                 []string // labels, newest first
	}{
		{"one word, every channel", "hello", "", 0, []string{"a3", "b1", "a1"}},
		{"and of words", "hello world", "", 0, []string{"a3", "a1"}},
		{"and with punctuation", "hello, world!", "", 0, []string{"a3", "a1"}},
		{"case-insensitive", "HeLLo WORLD", "", 0, []string{"a3", "a1"}},
		{"per channel", "hello", "#b", 0, []string{"b1"}},
		{"per channel other", "world", "#b", 0, []string{"b2"}},
		{"word only in another channel", "banana", "#a", 0, nil},
		{"no such word", "kiwi", "", 0, nil},
		{"and with no common envelope", "hello fox", "", 0, nil},
		{"and of three", "quick brown fox", "#a", 0, []string{"a2"}},
		{"unicode word", "café", "", 0, []string{"a4"}},
		{"unicode upper case", "CAFÉ ÜNÏCÖDÉ", "", 0, []string{"a4"}},
		{"cjk word", "東京", "", 0, []string{"a4"}},
		{"no normalization of accents", "cafe", "", 0, nil},
		{"whole words only", "goph", "", 0, nil},
		{"short word is a word", "go", "", 0, []string{"a1"}},
		{"prefix", "goph*", "", 0, []string{"a5"}},
		{"prefix matching several words", "go*", "", 0, []string{"a5", "a1"}},
		{"prefix with a word", "hello wor*", "#a", 0, []string{"a3", "a1"}},
		{"prefix with no match", "zebra*", "", 0, nil},
		{"exact word wins over its prefix", "hello hello*", "", 0, []string{"a3", "b1", "a1"}},
		{"one-letter words ignored", "a hello", "#b", 0, []string{"b1"}},
		{"name is indexed", "tester", "", 0, []string{"a5", "a4", "b2", "a3", "a2", "b1", "a1"}},
		{"limit", "tester", "", 2, []string{"a5", "a4"}},
		{"limit per channel", "tester", "#a", 3, []string{"a5", "a4", "a3"}},
		{"private channel not indexed", "secret", "", 0, nil},
		{"searching a private channel", "hello", privateChannel, 0, nil},
		{"channel with nothing", "hello", "#none", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			envs, curs, err := db.Search(ctx, tt.query, tt.channel, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i, c := range curs {
				got = append(got, label[c])
				if want := cur[label[c]]; envs[i].ID == "" || c != want {
					t.Errorf("cursor %d = %s, want %s", i, c, want)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Search(%q, %q) = %q, want %q", tt.query, tt.channel, got, tt.want)
			}
			if len(envs) != len(curs) {
				t.Errorf("%d envelopes, %d cursors", len(envs), len(curs))
			}
			for _, e := range envs {
				if err := e.Verify(); err != nil {
					t.Errorf("result does not verify: %v", err)
				}
			}
		})
	}
	st := db.Stats()
	if st.Searches != uint64(len(tests)) || st.SearchErrors != 0 || st.SearchResults == 0 {
		t.Errorf("stats %+v: want %d searches, 0 errors, some results", st, len(tests))
	}
}

func TestSearchInvalid(t *testing.T) {
	db := open(t, "")
	searchFixture(t, db)
	var manyPrefixed []string
	for i := range maxPrefixExpanded + 5 {
		manyPrefixed = append(manyPrefixed, nth("zz", i))
	}
	appendAll(t, db, signed(t, newKey(t), "#c", 1, "marker "+strings.Join(manyPrefixed, " ")))
	tests := []struct{ name, query, channel string }{
		{"empty", "", ""},
		{"spaces", "   ", ""},
		{"only one-letter words", "a b c", ""},
		{"only punctuation", "!!! ???", ""},
		{"too long", strings.Repeat("ab ", 90), ""},
		{"too many words", "w1 w2 w3 w4 w5 w6 w7 w8 w9", ""},
		{"too many words with prefix", "w1 w2 w3 w4 w5 w6 w7 w8 w9*", ""},
		{"not utf-8", "hello \xff", ""},
		{"bad channel", "hello", "#A"},
		{"channel with nul", "hello", "#a\x00"},
		{"prefix too broad", "zz*", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			envs, _, err := db.Search(ctx, tt.query, tt.channel, 0)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Search(%q, %q) = %d envelopes, err %v; want ErrInvalid", trunc(tt.query), tt.channel, len(envs), err)
			}
		})
	}
	// Eight distinct words are fine, repeats count once.
	if _, _, err := db.Search(ctx, "w1 w2 w3 w4 w5 w6 w7 w8 w1 w2", "", 0); err != nil {
		t.Errorf("8 distinct words: %v", err)
	}
	// A broad prefix is allowed with an exact word: matches are filtered.
	envs, _, err := db.Search(ctx, "marker zz*", "", 0)
	if err != nil || len(envs) != 1 {
		t.Errorf("marker zz*: %d envelopes, err %v; want 1", len(envs), err)
	}
	envs, _, err = db.Search(ctx, "hello zz*", "", 0)
	if err != nil || len(envs) != 0 {
		t.Errorf("hello zz*: %d envelopes, err %v; want 0", len(envs), err)
	}
	if st := db.Stats(); st.SearchErrors != uint64(len(tests)) {
		t.Errorf("SearchErrors = %d, want %d", st.SearchErrors, len(tests))
	}
}

func TestSearchLimit(t *testing.T) {
	db := open(t, "")
	k := newKey(t)
	var envs []*mesh.Envelope
	for i := range MaxSearchLimit + 10 {
		envs = append(envs, signed(t, k, "#a", uint64(i+1), nth("common word ", i)))
	}
	curs := appendAll(t, db, envs...)
	slices.Reverse(curs)
	tests := []struct {
		limit, want int
	}{{0, DefaultSearchLimit}, {-1, DefaultSearchLimit}, {7, 7}, {MaxSearchLimit + 1, MaxSearchLimit}, {1 << 30, MaxSearchLimit}}
	for _, tt := range tests {
		_, got, err := db.Search(ctx, "common", "#a", tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, curs[:tt.want]) {
			t.Errorf("limit %d: got %d cursors (first %v), want the newest %d", tt.limit, len(got), got[:min(1, len(got))], tt.want)
		}
	}
}

func TestTokenize(t *testing.T) {
	long := strings.Repeat("x", maxTokenBytes+1)
	tests := []struct {
		in   string
		want []string
	}{
		{"Hello, World!", []string{"hello", "world"}},
		{"a bc d", []string{"bc"}},
		{"dup DUP Dup", []string{"dup"}},
		{"snake_case kebab-case dot.ted", []string{"snake", "case", "kebab", "dot", "ted"}},
		{"v1.2.3 x86", []string{"v1", "x86"}},
		{"東京タワー", []string{"東京タワー"}},
		{"ÄÖÜ straße", []string{"äöü", "straße"}},
		{long + " ok", []string{"ok"}},
		{strings.Repeat("x", maxTokenBytes), []string{strings.Repeat("x", maxTokenBytes)}},
		{"emoji🙂split", []string{"emoji", "split"}},
		{"", nil},
	}
	for _, tt := range tests {
		got := tokenize(tt.in, map[string]struct{}{}, nil, maxTokensPerEnv)
		if !slices.Equal(got, tt.want) {
			t.Errorf("tokenize(%q) = %q, want %q", trunc(tt.in), got, tt.want)
		}
	}
	var words []string
	for i := range maxTokensPerEnv + 100 {
		words = append(words, nth("w", i))
	}
	e := &mesh.Envelope{Channel: "#a", Name: "bob", Content: strings.Join(words, " ")}
	toks := envelopeTokens(e)
	if len(toks) != maxTokensPerEnv || toks[0] != "bob" {
		t.Errorf("envelopeTokens: %d tokens starting %q, want %d starting with the name", len(toks), toks[:1], maxTokensPerEnv)
	}
	e.Channel = privateChannel
	if toks := envelopeTokens(e); toks != nil {
		t.Errorf("private channel tokens = %q, want none", toks)
	}
}

func TestParseQuery(t *testing.T) {
	tests := []struct {
		in     string
		terms  []string
		prefix string
	}{
		{"hello", []string{"hello"}, ""},
		{"hello world*", []string{"hello"}, "world"},
		{"hello world* ", []string{"hello"}, "world"},
		{"hello world *", []string{"hello", "world"}, ""},
		{"Wor*", nil, "wor"},
		{"hello a*", []string{"hello"}, ""},
		{"go go go", []string{"go"}, ""},
	}
	for _, tt := range tests {
		q, err := parseQuery(tt.in)
		if err != nil {
			t.Errorf("parseQuery(%q): %v", tt.in, err)
			continue
		}
		if !slices.Equal(q.terms, tt.terms) || q.prefix != tt.prefix {
			t.Errorf("parseQuery(%q) = %q + prefix %q, want %q + %q", tt.in, q.terms, q.prefix, tt.terms, tt.prefix)
		}
	}
}

// TestIndexRebuild opens a store whose index is missing (as written before
// search existed): New rebuilds it.
func TestIndexRebuild(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	searchFixture(t, db)
	before, _, err := db.Search(ctx, "hello", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.bdb.DropPrefix([]byte(prefixPosting), []byte(prefixArrival), keyIndexVersion); err != nil {
		t.Fatal(err)
	}
	if envs, _, err := db.Search(ctx, "hello", "", 0); err != nil || len(envs) != 0 {
		t.Fatalf("after dropping the index: %d results, err %v; want none", len(envs), err)
	}
	db.Close()
	db = open(t, dir)
	after, _, err := db.Search(ctx, "hello", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(after), ids(before)) || len(after) != 3 {
		t.Errorf("after rebuild %q, want %q", ids(after), ids(before))
	}
	// New envelopes get arrival times after the rebuilt ones and are found.
	appendAll(t, db, signed(t, newKey(t), "#a", 1, "hello after reopen"))
	if envs, _, err := db.Search(ctx, "hello reopen", "", 0); err != nil || len(envs) != 1 {
		t.Errorf("new envelope: %d results, err %v; want 1", len(envs), err)
	}
	var ver []byte
	db.bdb.View(func(txn *badger.Txn) error {
		item, err := txn.Get(keyIndexVersion)
		if err == nil {
			ver, _ = item.ValueCopy(nil)
		}
		return err
	})
	if !slices.Equal(ver, []byte{indexVersion}) {
		t.Errorf("index version %v, want %d", ver, indexVersion)
	}
}
