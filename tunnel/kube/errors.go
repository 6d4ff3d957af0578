package kube

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	//lint:ignore SA1019 client-go's SPDY and websocket dialers still return this package's UpgradeFailureError
	apihttpstream "k8s.io/apimachinery/pkg/util/httpstream"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

// Sentinels for the failures a caller may branch on (errors.Is). The
// returned errors carry a full sentence; these only classify them.
var (
	ErrNoReadyPod   = errors.New("no ready pod")
	ErrForbidden    = errors.New("forbidden")
	ErrUnauthorized = errors.New("unauthorized")
	ErrUnreachable  = errors.New("API server unreachable")
	ErrClosed       = errors.New("kube tunnel closed")
)

// kubeError is a sentence for the user plus the class it belongs to.
type kubeError struct {
	kind  error
	msg   string
	cause error
}

func (e *kubeError) Error() string        { return e.msg }
func (e *kubeError) Unwrap() error        { return e.cause }
func (e *kubeError) Is(target error) bool { return target == e.kind }

// access names what the caller tried: an RBAC verb on a resource.
type access struct {
	verb     string // "get", "list", "get/create"
	resource string // "deployments", "pods", "pods/portforward"
	name     string // object name, empty for list
}

func (a access) String() string {
	if a.name == "" {
		return a.verb + " " + a.resource
	}
	return fmt.Sprintf("%s %s %s", a.verb, a.resource, a.name)
}

// explain turns a failed API call into a sentence: forbidden (with the RBAC
// rule to grant), unauthorized, unreachable within the deadline, or the
// call and its cause.
func (t *podTunnel) explain(err error, a access) error {
	if se, ok := apiStatus(err); ok {
		switch {
		case apierrors.IsForbidden(se):
			return &kubeError{kind: ErrForbidden, cause: err, msg: fmt.Sprintf(
				"kube: forbidden to %s in namespace %s: grant RBAC %s on %q (API server said: %s)",
				a, t.namespace, verbs(a.verb), a.resource, se.ErrStatus.Message)}
		case apierrors.IsUnauthorized(se):
			return &kubeError{kind: ErrUnauthorized, cause: err, msg: fmt.Sprintf(
				"kube: the API server %s rejected the credentials (401) while trying to %s; refresh your kubeconfig login",
				t.rest.Host, a)}
		}
	}
	if isNetwork(err) {
		return &kubeError{kind: ErrUnreachable, cause: err, msg: fmt.Sprintf(
			"kube: API server %s unreachable within %s while trying to %s: %v",
			t.rest.Host, t.cfg.DialTimeout, a, rootCause(err))}
	}
	return fmt.Errorf("kube: %s in namespace %s: %w", a, t.namespace, err)
}

// verbs spells "get/create" as `verbs "get" and "create"`.
func verbs(v string) string {
	vs := strings.Split(v, "/")
	if len(vs) == 1 {
		return fmt.Sprintf("verb %q", v)
	}
	return fmt.Sprintf("verbs %q and %q", vs[0], vs[1])
}

// apiStatus finds a Kubernetes Status error, also inside the upgrade
// failures of both httpstream packages (which do not unwrap their cause).
func apiStatus(err error) (*apierrors.StatusError, bool) {
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		return se, true
	}
	var su *streamhttp.UpgradeFailureError
	if errors.As(err, &su) && su.Cause != nil {
		return apiStatus(su.Cause)
	}
	var au *apihttpstream.UpgradeFailureError
	if errors.As(err, &au) && au.Cause != nil {
		return apiStatus(au.Cause)
	}
	return nil, false
}

// shouldFallback reports whether the websocket attempt failed at the
// upgrade itself, so that SPDY may succeed: an API server or proxy that
// does not speak websocket port-forwarding, RBAC that grants only "create"
// (websocket uses GET), or gorilla's missing HTTPS-proxy support. client-go
// v0.37's websocket transport returns k8s.io/streaming's
// UpgradeFailureError, which apimachinery's IsUpgradeFailure does not
// recognise; both are checked.
func shouldFallback(err error) bool {
	return streamhttp.IsUpgradeFailure(err) ||
		apihttpstream.IsUpgradeFailure(err) ||
		streamhttp.IsHTTPSProxyError(err)
}

// isNetwork reports a transport-level failure: refused, reset, timed out.
func isNetwork(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || (errors.As(err, &ne) && ne.Timeout())
}

// rootCause strips URL and wrapping noise for a readable sentence.
func rootCause(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return errors.New("timed out")
	}
	return err
}

// noReadyPod describes why no pod qualified.
func (t *podTunnel) noReadyPod(what, selector string, seen []string) error {
	detail := "no pod matches " + selector
	if len(seen) > 0 {
		detail = fmt.Sprintf("%d pods match %s: %s", len(seen), selector, strings.Join(seen, ", "))
	}
	return &kubeError{kind: ErrNoReadyPod, msg: fmt.Sprintf(
		"kube: no ready pod for %s in namespace %s (%s)", what, t.namespace, detail)}
}
