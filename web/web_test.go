package web

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadToken(t *testing.T) {
	p := filepath.Join(t.TempDir(), "web.token")
	a, err := LoadToken(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	b, err := LoadToken(p)
	if err != nil || a != b || len(a) != 64 {
		t.Fatalf("second load %q (%v), want the first %q", b, err, a)
	}
	if NewToken() == NewToken() {
		t.Error("NewToken repeats")
	}
	os.Chmod(p, 0o644)
	if _, err := LoadToken(p); err == nil {
		t.Error("a world-readable token file was accepted")
	}
	os.WriteFile(p, []byte("short\n"), 0o600)
	os.Chmod(p, 0o600)
	if _, err := LoadToken(p); err == nil {
		t.Error("a short token was accepted")
	}
}

func TestHandlerRoutesAndHeaders(t *testing.T) {
	if _, err := New(Config{Token: NewToken()}); err == nil {
		t.Error("New without a backend succeeded")
	}
	s := &Server{}
	tests := []struct {
		method, path string
		want         int
		ctype        string
	}{
		{"GET", "/", 200, "text/html"},
		{"GET", "/assets/app.js", 200, "text/javascript"},
		{"GET", "/assets/app.css", 200, "text/css"},
		{"GET", "/assets/icon.svg", 200, "image/svg+xml"},
		{"GET", "/assets/", 404, ""},
		{"GET", "/nope", 404, ""},
		{"POST", "/", 405, ""},
	}
	_, s.static = newStatic()
	h := s.Handler()
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Code != tt.want {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, rec.Code, tt.want)
		}
		if ct := rec.Header().Get("Content-Type"); tt.ctype != "" && !strings.HasPrefix(ct, tt.ctype) {
			t.Errorf("%s: content type %q, want %s", tt.path, ct, tt.ctype)
		}
		for k, v := range map[string]string{"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
			if got := rec.Header().Get(k); got != v {
				t.Errorf("%s %s: %s %q, want %q", tt.method, tt.path, k, got, v)
			}
		}
	}
}

// TestNoInlineCode keeps the page within its CSP: no inline scripts, styles
// or event handlers, and no HTML parsing of data in the script.
func TestNoInlineCode(t *testing.T) {
	html, _ := assets.ReadFile("assets/index.html")
	js, _ := assets.ReadFile("assets/app.js")
	for _, bad := range []string{"<style", "style=", " onclick=", " onload=", "<script>"} {
		if strings.Contains(string(html), bad) {
			t.Errorf("index.html contains %q", bad)
		}
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js contains %q", bad)
		}
	}
}
