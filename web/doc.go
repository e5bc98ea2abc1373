// Package web serves the watch page: a read-only view of a node's channels,
// presence and conversations for people, in the browser.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary (no build
// step, no CDN). It speaks the gateway protocol from the browser over a
// WebSocket at /v1 on the same origin, served by a wsgateway.ReadOnly: the
// connection must carry the read-only token (the page reads it from the URL
// fragment, #token=..., which browsers never send to servers) and come from
// the same origin, and may only read (info, who, history, subscribe).
// Every response carries a strict Content-Security-Policy (no inline script
// or style, connections only to the same origin, no framing); the page
// renders message content as text, never as HTML.
//
// A local node (confab up --web ADDR) shows everything it has, private
// channels included, since it is a member of them. A rendezvous sets
// Config.Hide to HidePrivate so private channels never appear there.
//
// Lifecycle: New validates the config and builds the read-only gateway;
// Handler serves; Close closes every WebSocket connection and waits for its
// goroutines. All methods are safe for concurrent use; the package holds no
// locks of its own.
package web
