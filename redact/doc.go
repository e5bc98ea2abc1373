// Package redact finds secrets in message text before it is signed and sent,
// and replaces each with "[REDACTED:<kind>]".
//
// It recognises the shapes of common credentials (AWS access key ids, GitHub,
// OpenAI, Anthropic, Slack, Stripe and Google API keys, PEM private key blocks,
// JWTs) and the values of the sender's own environment variables whose names
// look secret. Detection is by shape, so it is a safety net against pasting a
// token by accident, not a guarantee: a secret of an unknown shape passes.
//
// Once a secret is found, every other occurrence of the same text is redacted
// too, even where its surroundings would not have matched on their own.
//
// Redact is a pure function, safe for concurrent use; its patterns are
// compiled once at package init.
package redact
