package wsgateway

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Authenticate proves to a remote-mode gateway that this client holds key:
// it signs AuthBytes(welcome nonce, gateway id, own id) and sends it with
// secret (the gateway's join secret, "" if it has none). A refusal is an
// *Error with CodeUnauthorized and the gateway closes the connection.
func (c *Client) Authenticate(ctx context.Context, key crypto.PrivKey, secret string) error {
	if c.welcome.Mode != ModeRemote {
		return &Error{Code: CodeUnsupported, Message: "the gateway is in " + string(c.welcome.Mode) + " mode"}
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return fmt.Errorf("wsgateway: authenticate: %w", err)
	}
	sig, err := key.Sign(AuthBytes(c.welcome.Nonce, c.welcome.Node, id.String()))
	if err != nil {
		return fmt.Errorf("wsgateway: authenticate: %w", err)
	}
	_, err = expect[*OK](c.call(ctx, func(req string) Frame {
		return &Auth{Req: req, Peer: id.String(), Sig: sig, Secret: secret}
	}))
	return err
}

// NextSeq asks the gateway which seq the next envelope of author on
// channel must carry ("" = the authenticated client).
func (c *Client) NextSeq(ctx context.Context, channel, author string) (uint64, error) {
	r, err := expect[*SeqReply](c.call(ctx, func(req string) Frame {
		return &SeqRequest{Req: req, Channel: channel, Peer: author}
	}))
	if err != nil {
		return 0, err
	}
	return r.Next, nil
}
