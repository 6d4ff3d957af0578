package iamtoken

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Reasons carried by Error. They are fixed labels, safe as metric values.
const (
	ReasonMalformed   = "malformed"
	ReasonAction      = "action"
	ReasonService     = "service"
	ReasonHost        = "host"
	ReasonUser        = "user"
	ReasonRegion      = "region"
	ReasonExpired     = "expired"
	ReasonNotYetValid = "not-yet-valid"
	ReasonLifetime    = "lifetime"
)

// MaxLifetime is the longest lifetime RDS gives a token. A presigned URL
// may claim up to 7 days (SigV4's limit), but a token that claims more
// than this is not one RDS would accept at its 16th minute.
const MaxLifetime = 15 * time.Minute

// Error is a token that cannot work for the intended connection.
type Error struct {
	Reason string // one of the Reason constants
	Msg    string // a sentence telling the user what is wrong
}

func (e *Error) Error() string { return e.Msg }

func malformed(format string, args ...any) *Error {
	return &Error{Reason: ReasonMalformed, Msg: fmt.Sprintf(format, args...)}
}

// Expect describes the connection a token is presented for.
type Expect struct {
	Endpoint string        // target "host:port"
	User     string        // startup user
	Region   string        // target region; empty skips the check
	Now      time.Time     // zero means time.Now()
	Skew     time.Duration // clock difference tolerated at both ends of the validity window
}

// Check reports, as an *Error, the first reason the token would be refused
// for the connection e describes. It does not verify the signature.
func (t *Token) Check(e Expect) error {
	checks := []func(Expect) *Error{t.checkAction, t.checkHost, t.checkUser, t.checkRegion, t.checkTime}
	for _, c := range checks {
		if err := c(e); err != nil {
			return err
		}
	}
	return nil
}

func (t *Token) checkAction(Expect) *Error {
	if t.action != Action {
		return &Error{Reason: ReasonAction, Msg: fmt.Sprintf("token action is %q, not connect", limit(t.action))}
	}
	if t.service != Service {
		return &Error{Reason: ReasonService, Msg: "token is not for the rds-db service"}
	}
	return nil
}

func (t *Token) checkHost(e Expect) *Error {
	host, port, err := net.SplitHostPort(e.Endpoint)
	if err != nil {
		host, port = e.Endpoint, ""
	}
	if strings.EqualFold(host, t.Host) && port == strconv.Itoa(t.Port) {
		return nil
	}
	return &Error{Reason: ReasonHost, Msg: fmt.Sprintf("token was signed for host %s but the target is %s",
		limit(t.Endpoint()), e.Endpoint)}
}

func (t *Token) checkUser(e Expect) *Error {
	if t.DBUser == e.User {
		return nil
	}
	return &Error{Reason: ReasonUser, Msg: fmt.Sprintf("token is for DB user %q but the connection is for user %q",
		limit(t.DBUser), e.User)}
}

func (t *Token) checkRegion(e Expect) *Error {
	if e.Region == "" || t.Region == e.Region {
		return nil
	}
	return &Error{Reason: ReasonRegion, Msg: fmt.Sprintf("token is for region %s but the target is in %s",
		limit(t.Region), e.Region)}
}

func (t *Token) checkTime(e Expect) *Error {
	if t.Lifetime > MaxLifetime {
		return &Error{Reason: ReasonLifetime, Msg: fmt.Sprintf(
			"token claims a lifetime of %s (X-Amz-Expires); RDS tokens live at most %s, sign one with the default lifetime",
			t.Lifetime, MaxLifetime)}
	}
	now := e.Now
	if now.IsZero() {
		now = time.Now()
	}
	if ahead := t.SignedAt.Sub(now); ahead > e.Skew {
		return &Error{Reason: ReasonNotYetValid, Msg: fmt.Sprintf(
			"token is dated %s in the future; check this machine's clock", ahead.Round(time.Second))}
	}
	if late := now.Sub(t.Expires()); late > e.Skew {
		return &Error{Reason: ReasonExpired, Msg: fmt.Sprintf(
			"token expired %s ago; sign a fresh one", late.Round(time.Second))}
	}
	return nil
}
