package ssm

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/aws/smithy-go"

	"github.com/rdsproxy/rdsproxy/tunnel"
)

// SessionEndedError says why a session ended; streams on it fail with it.
type SessionEndedError struct {
	SessionID string
	Reason    string // human-readable, from channel_closed or the failure
	Err       error  // underlying cause, if any
}

func (e *SessionEndedError) Error() string {
	s := "ssm session " + e.SessionID + " ended"
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *SessionEndedError) Unwrap() error { return e.Err }

// ErrTunnelClosed is returned by Dial after Close, and by streams that were
// open when the tunnel was closed.
var ErrTunnelClosed = errors.New("ssm tunnel closed")

// ErrConnectToPort means the agent could not connect to the destination.
var ErrConnectToPort = errors.New("the SSM agent could not connect to the destination port")

// startSessionError turns StartSession failures into sentences a user can
// act on. The original error stays wrapped.
func startSessionError(target, document string, err error) error {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return fmt.Errorf("ssm StartSession on %s: %w", target, err)
	}
	msg := ae.ErrorMessage()
	switch ae.ErrorCode() {
	case "TargetNotConnected":
		return goneError{fmt.Errorf("instance %s is not connected to Systems Manager (agent stopped or no route to the SSM endpoints): %w", target, err)}
	case "InvalidTarget":
		return goneError{fmt.Errorf("%s is not a valid Systems Manager target (wrong id, another account or region, or not a managed node): %w", target, err)}
	case "AccessDeniedException":
		if m := deniedAction.FindStringSubmatch(msg); m != nil {
			return fmt.Errorf("access denied: your AWS identity is not allowed %s on %s; it needs ssm:StartSession on %s and on the document %s (and ssm:TerminateSession on its own sessions): %w",
				m[1], m[2], target, documentARNHint(document), err)
		}
		return fmt.Errorf("access denied: your AWS identity needs ssm:StartSession on %s and on the document %s (and ssm:TerminateSession on its own sessions): %w",
			target, documentARNHint(document), err)
	case "InvalidDocument", "InvalidDocumentVersion":
		if strings.Contains(strings.ToLower(msg), "agent") {
			return fmt.Errorf("the SSM agent on %s is too old for port forwarding (update amazon-ssm-agent to 3.0.222.0 or later): %w", target, err)
		}
		return fmt.Errorf("document %s is not available: %w", document, err)
	case "InvalidParameters", "ValidationException":
		if strings.Contains(strings.ToLower(msg), "agent") {
			return fmt.Errorf("the SSM agent on %s is too old for port forwarding (update amazon-ssm-agent to 3.0.222.0 or later): %w", target, err)
		}
		return fmt.Errorf("ssm StartSession on %s with %s rejected its parameters: %w", target, document, err)
	case "ThrottlingException":
		return fmt.Errorf("ssm StartSession on %s was throttled; retry shortly: %w", target, err)
	}
	return fmt.Errorf("ssm StartSession on %s: %w", target, err)
}

// goneError is a StartSession refusal that says the target cannot serve
// (not connected, not a managed node any more): it also matches
// tunnel.ErrReplicaGone, so a tunnel.Pool opens no more streams through
// this instance's tunnel and finds the server's instances again.
type goneError struct{ error }

func (e goneError) Unwrap() []error { return []error{e.error, tunnel.ErrReplicaGone} }

// deniedAction finds the action and resource in an IAM denial message.
var deniedAction = regexp.MustCompile(`perform: (\S+) on resource: (\S+)`)

func documentARNHint(document string) string {
	return "arn:aws:ssm:<region>::document/" + document
}
