package callerid

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

var bodyHash = func() string {
	h := sha256.Sum256([]byte(Body))
	return hex.EncodeToString(h[:])
}()

// Sign makes a GetCallerIdentity request for the regional STS endpoint
// of region, bound to serverID, signed with creds at now by the AWS SDK's
// SigV4 signer.
func Sign(ctx context.Context, creds aws.Credentials, region, serverID string, now time.Time) (Request, error) {
	if region == "" || serverID == "" {
		return Request{}, fmt.Errorf("sign caller identity: region and server id are required")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+STSHost(region)+"/", strings.NewReader(Body))
	if err != nil {
		return Request{}, fmt.Errorf("sign caller identity: %w", err)
	}
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set(ServerIDHeader, serverID)
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, bodyHash, "sts", region, now.UTC()); err != nil {
		return Request{}, fmt.Errorf("sign caller identity: %w", err)
	}
	auth, err := ParseAuthorization(req.Header.Get("Authorization"))
	if err != nil {
		return Request{}, fmt.Errorf("sign caller identity: %w", err)
	}
	r := Request{Headers: map[string]string{}, Authorization: req.Header.Get("Authorization")}
	for _, h := range auth.SignedHeaders {
		switch h {
		case "content-type", "content-length":
		case "host":
			r.Headers[h] = req.URL.Host
		default:
			r.Headers[h] = req.Header.Get(h)
		}
	}
	return r, nil
}
