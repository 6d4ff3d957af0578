package e2e

import (
	"context"
	"os"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/callerid"
	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// worldIdentity is the caller identity of the sandbox credentials for a
// binary server with the default --server-id (the host name), verified
// by the world's STS emulator. Servers that check no identity ignore it.
func worldIdentity() string {
	host, _ := os.Hostname()
	req, err := callerid.Sign(context.Background(), sandbox.PrincipalUser.Credentials(), sandbox.Region, host, time.Now())
	if err != nil {
		return ""
	}
	enc := req.Encode()
	rememberIdentity(enc)
	return enc
}
