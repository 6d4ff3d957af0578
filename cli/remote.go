package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/contract"
	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// remote is an open tunnel to a server and the targets it serves.
type remote struct {
	tun       tunnel.Tunnel
	serverTLS *tls.Config
	targets   []contract.Target
	// identity is how the server checks caller identity (nil: it does
	// not); ids signs them; caller is who the server says we are.
	identity *callerid.ServerInfo
	ids      client.Identities
	caller   *contract.Principal
	// striping offers the striped transport (--via ssm, unless
	// --no-ssm-striping), compressed unless --no-ssm-compress.
	striping, noCompression bool
}

// dial opens the tunnel and fetches the target list, with a spinner on
// stderr while it waits (only on a terminal, never with --quiet or
// --verbose). The
// target names are remembered for shell completion.
func (f *TunnelFlags) dial(ctx context.Context, log *slog.Logger, env Env, quiet bool) (*remote, error) {
	// The indicator only when info logs are off: they say the same.
	stop := spinner(env, "opening the --via "+f.Via+" tunnel", !quiet && !log.Enabled(ctx, slog.LevelInfo))
	defer stop()
	tun, serverTLS, err := f.open(ctx, log)
	if err != nil {
		return nil, &ExitError{Code: ExitFailure, Err: err}
	}
	fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	ids := f.identities(ctx, log)
	list, err := client.FetchTargetList(fctx, tun, serverTLS, ids)
	err = f.targetListError(err)
	if errors.Is(err, client.ErrServerWithoutTLS) {
		err = fmt.Errorf("%w: start the server with --tls-cert and --tls-key, or leave out --server-ca", err)
	}
	if err != nil {
		tun.Close()
		return nil, &ExitError{Code: ExitFailure, Err: err}
	}
	targets := list.Targets
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.Name
	}
	if err := newStateStore().rememberTargets(names); err != nil {
		log.Debug("cannot remember target names for completion", "err", err)
	}
	return &remote{tun: tun, serverTLS: serverTLS, targets: targets, identity: list.Identity, ids: ids, caller: list.Caller,
		striping: f.Via == "ssm" && f.SSMStriping, noCompression: !f.SSMCompress}, nil
}

// targetListError says a failed request for the target list in the
// user's terms: the HTTP client's *url.Error names the request by a URL
// that exists only inside the tunnel (Get "http://rdsproxy/v1/targets"),
// so it is replaced by what was being done, keeping its cause. Other
// errors (the server's answer, a signing failure) pass unchanged.
func (f *TunnelFlags) targetListError(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	return fmt.Errorf("could not get the target list from the rdsproxy server through the --via %s tunnel: %w", f.Via, ue.Err)
}

func (r *remote) Close() error { return r.tun.Close() }

// dialTarget is dial for a command about one target: it also finds name
// in the server's list.
func (f *TunnelFlags) dialTarget(ctx context.Context, log *slog.Logger, env Env, quiet bool, name string) (*remote, contract.Target, error) {
	r, err := f.dial(ctx, log, env, quiet)
	if err != nil {
		return nil, contract.Target{}, err
	}
	t, err := client.FindTarget(r.targets, name)
	if err != nil {
		r.Close()
		return nil, contract.Target{}, &ExitError{Code: ExitFailure, Err: err}
	}
	return r, t, nil
}
