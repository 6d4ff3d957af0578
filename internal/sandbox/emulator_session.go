package sandbox

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup-phase request codes (PostgreSQL protocol, section "Message Formats").
const (
	codeCancel   = 80877102
	codeSSL      = 80877103
	codeGSSENC   = 80877104
	protoMajor3  = 3
	maxNegotiate = 3 // GSSENCRequest, SSLRequest, then the real message
)

// emuSession is one client connection to the emulator.
type emuSession struct {
	e        *Emulator
	raw      net.Conn // the accepted TCP connection
	conn     net.Conn // raw, or the TLS connection over it
	tls      bool
	sni      string
	remote   string
	deadline time.Time // for negotiation, startup and authentication
}

func (s *emuSession) serve() {
	s.deadline = time.Now().Add(s.e.cfg.StartupTimeout)
	_ = s.raw.SetDeadline(s.deadline)
	msg, err := s.negotiate()
	if err != nil {
		s.e.log.Debug("emulator startup failed", "remote", s.remote, "err", err)
		return
	}
	switch code := binary.BigEndian.Uint32(msg[4:8]); {
	case code == codeCancel:
		s.forwardCancel(msg)
	case code>>16 == protoMajor3:
		s.startup(msg)
	default:
		s.fatal("0A000", fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", code>>16, code&0xffff))
	}
}

// negotiate answers SSLRequest ('S', then TLS) and GSSENCRequest ('N') and
// returns the first StartupMessage or CancelRequest, length included.
func (s *emuSession) negotiate() ([]byte, error) {
	for range maxNegotiate {
		msg, err := readStartupPacket(s.conn)
		if err != nil {
			return nil, err
		}
		switch binary.BigEndian.Uint32(msg[4:8]) {
		case codeSSL:
			if s.tls {
				return nil, errors.New("SSLRequest inside TLS")
			}
			if err := s.startTLS(); err != nil {
				return nil, err
			}
		case codeGSSENC:
			if s.tls {
				return nil, errors.New("GSSENCRequest inside TLS")
			}
			if _, err := s.conn.Write([]byte{'N'}); err != nil {
				return nil, fmt.Errorf("answer GSSENCRequest: %w", err)
			}
		default:
			return msg, nil
		}
	}
	return nil, errors.New("too many negotiation requests")
}

func (s *emuSession) startTLS() error {
	if _, err := s.conn.Write([]byte{'S'}); err != nil {
		return fmt.Errorf("answer SSLRequest: %w", err)
	}
	tc := tls.Server(s.raw, s.e.tlsConfig)
	if err := tc.HandshakeContext(s.e.ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	s.conn, s.tls, s.sni = tc, true, tc.ConnectionState().ServerName
	return nil
}

// readStartupPacket reads one length-prefixed startup-phase packet,
// refusing lengths outside 8..emuMaxStartup.
func readStartupPacket(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read startup length: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 8 || n > emuMaxStartup {
		return nil, fmt.Errorf("startup packet length %d outside 8..%d", n, emuMaxStartup)
	}
	msg := make([]byte, n)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(r, msg[4:]); err != nil {
		return nil, fmt.Errorf("read startup packet: %w", err)
	}
	return msg, nil
}

// forwardCancel passes a CancelRequest to PostgreSQL unchanged; PostgreSQL
// ignores unknown keys, so this needs no check.
func (s *emuSession) forwardCancel(msg []byte) {
	ctx, cancel := context.WithTimeout(s.e.ctx, emuCheckTimeout)
	defer cancel()
	up, err := (&net.Dialer{}).DialContext(ctx, "unix", s.e.cfg.Postgres.SocketPath())
	if err != nil {
		s.e.log.Debug("emulator cancel: dial postgres", "err", err)
		return
	}
	defer up.Close()
	_ = up.SetDeadline(time.Now().Add(emuCheckTimeout))
	if _, err := up.Write(msg); err != nil {
		s.e.log.Debug("emulator cancel: forward", "err", err)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(up, 1)) // PostgreSQL closes when done
}

// startup authenticates a StartupMessage and, on success, relays the
// session to PostgreSQL.
func (s *emuSession) startup(msg []byte) {
	var sm pgproto3.StartupMessage
	if err := sm.Decode(msg[4:]); err != nil {
		s.fatal("08P01", "invalid startup packet layout: expected terminator as last byte")
		return
	}
	user, database := sm.Parameters["user"], sm.Parameters["database"]
	if user == "" {
		s.fatal("28000", "no PostgreSQL user name specified in startup packet")
		return
	}
	if database == "" {
		database = user
	}
	if !s.tls {
		host, _, _ := net.SplitHostPort(s.remote)
		s.fatal("28000", fmt.Sprintf(`no pg_hba.conf entry for host "%s", user "%s", database "%s", no encryption`, host, user, database))
		return
	}
	if err := s.authenticate(user); err != nil {
		if errors.Is(err, errCheckUnavailable) {
			s.e.log.Warn("emulator could not authenticate", "user", user, "remote", s.remote, "err", err)
			s.fatal("08006", "the RDS IAM emulator could not check rds_iam membership; see its log")
			return
		}
		s.e.log.Debug("emulator refused iam authentication", "user", user, "remote", s.remote, "reason", err)
		s.fatal("28P01", fmt.Sprintf(`PAM authentication failed for user "%s"`, user))
		return
	}
	s.relay(msg)
}

// authenticate asks for the password and verifies it as an IAM token. It
// returns why it was refused, or nil when accepted; the error never
// contains the token.
func (s *emuSession) authenticate(user string) error {
	auth, _ := (&pgproto3.AuthenticationCleartextPassword{}).Encode(nil)
	if _, err := s.conn.Write(auth); err != nil {
		return fmt.Errorf("write password request: %w", err)
	}
	var hdr [5]byte
	if _, err := io.ReadFull(s.conn, hdr[:]); err != nil {
		return fmt.Errorf("read password message: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if hdr[0] != 'p' || n < 5 || n > emuMaxPassword+4 {
		return fmt.Errorf("expected a password message of at most %d bytes, got type %q length %d", emuMaxPassword, hdr[0], n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(s.conn, body); err != nil {
		return fmt.Errorf("read password message: %w", err)
	}
	var pw pgproto3.PasswordMessage
	if err := pw.Decode(body); err != nil {
		return fmt.Errorf("decode password message: %w", err)
	}
	req := tokenRequest{user: user, sni: s.sni, endpoints: s.e.endpoints,
		secrets: s.e.cfg.Credentials, now: s.e.cfg.Now()}
	if err := checkToken(pw.Password, req); err != nil {
		return err
	}
	// Membership last, as it costs a query; it shares the login's deadline.
	ctx, cancel := context.WithDeadline(s.e.ctx, s.deadline)
	defer cancel()
	return s.e.members.check(ctx, user)
}

// relay opens the session in PostgreSQL with the client's own startup
// message and copies bytes both ways until either side ends.
func (s *emuSession) relay(startup []byte) {
	ctx, cancel := context.WithTimeout(s.e.ctx, emuCheckTimeout)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "unix", s.e.cfg.Postgres.SocketPath())
	if err != nil {
		s.fatal("08006", "could not connect to the database server")
		return
	}
	up := c.(*net.UnixConn)
	if !s.e.track(up) {
		_ = up.Close()
		return
	}
	defer s.e.untrack(up)
	if _, err := up.Write(startup); err != nil {
		s.fatal("08006", "could not connect to the database server")
		return
	}
	_ = s.raw.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, s.conn)
		_ = up.CloseWrite() // PostgreSQL ends the backend at EOF
	}()
	_, _ = io.Copy(s.conn, up)
	_ = s.conn.Close() // ends the copy above if the client is still sending
	<-done
}

// fatal sends an ErrorResponse with severity FATAL; the caller then closes.
func (s *emuSession) fatal(code, msg string) {
	b, err := (&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg}).Encode(nil)
	if err == nil {
		_, _ = s.conn.Write(b)
	}
}
