package kube_test

import (
	"context"
	"log/slog"
	"os"

	"github.com/rdsproxy/rdsproxy/tunnel/kube"
)

// How `rdsproxy connect --via kube` is expected to use the package: one
// Tunnel for the process, one Dial per local client connection.
func ExampleNew() {
	ctx := context.Background()
	tun, err := kube.New(ctx, kube.Config{
		Context:    "prod",     // --kube-context; empty: current context
		Namespace:  "rdsproxy", // --kube-namespace; empty: from the context
		Deployment: "rdsproxy", // --kube-deployment (or Selector)
		Port:       5432,       // the server's container port
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		return // a sentence: bad config or kubeconfig
	}
	defer tun.Close()
	conn, err := tun.Dial(ctx) // errors.Is(err, kube.ErrNoReadyPod / ErrForbidden / ErrUnreachable ...)
	if err != nil {
		return
	}
	defer conn.Close()
	// relay bytes between the local client and conn
}
