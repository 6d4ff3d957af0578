package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/pgwire"
)

// errOtherServer marks a refusal of an identity signed for another
// server id; *otherServer carries the server's ErrorResponse.
var errOtherServer = errors.New("the identity was signed for another server")

type otherServer struct{ msg []byte }

func (o *otherServer) Error() string { return errOtherServer.Error() }
func (o *otherServer) Unwrap() error { return errOtherServer }

// signedForOtherServer reports whether m is the server's refusal of an
// identity signed for another server id.
func signedForOtherServer(m pgwire.Message) bool {
	code, reason := pgwire.Refusal(m)
	return code == pgwire.CodeInvalidAuthSpec && reason == contract.ReasonIdentityWrongServer
}

// relearnServer asks the server for its identity settings again, through
// the same tunnel, and reports whether its id changed: behind one
// address (a Kubernetes port-forward that moved to another pod) the
// server may not be the one the settings came from.
func (p *Proxy) relearnServer(ctx context.Context) bool {
	old := p.server.Load()
	list, err := FetchTargetList(ctx, p.cfg.Tunnel, p.cfg.ServerTLS, nil)
	if list.Identity == nil || old != nil && list.Identity.ServerID == old.ServerID {
		p.log.Debug("server identity settings unchanged", "err", err)
		return false
	}
	p.server.Store(list.Identity)
	p.log.Info("the rdsproxy server's id changed; identities are now signed for it", "server_id", list.Identity.ServerID)
	return true
}

// forwardRefusal passes the server's refusal on to the local client.
func (p *Proxy) forwardRefusal(local interface{ Write([]byte) (int, error) }, err error) error {
	var o *otherServer
	if errors.As(err, &o) {
		if _, werr := local.Write(o.msg); werr != nil {
			return fmt.Errorf("forward server reply: %w", werr)
		}
	}
	return err
}

// identityLoginWait is added to the startup timeout while the client
// waits for the server's answer after its token: it covers the
// database's login, which the server bounds itself (--login-timeout).
const identityLoginWait = time.Minute
