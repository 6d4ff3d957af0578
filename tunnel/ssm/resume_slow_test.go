package ssm_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	awsssm "github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
	"github.com/rdsproxy/rdsproxy/tunnel/ssm"
)

// slowResume is the SSM API with a ResumeSession that answers late, as it
// can on a loaded laptop or a slow network.
type slowResume struct {
	ssm.SSMAPI
	delay time.Duration
}

func (s slowResume) ResumeSession(ctx context.Context, in *awsssm.ResumeSessionInput, opts ...func(*awsssm.Options)) (*awsssm.ResumeSessionOutput, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.SSMAPI.ResumeSession(ctx, in, opts...)
}

// TestResumeSlowerThanGiveUp: the websocket is cut in the middle of a
// transfer and ResumeSession takes longer than the give-up time. The time
// spent resuming is not a peer that stopped acknowledging: the same
// session resumes and every byte arrives once.
func TestResumeSlowerThanGiveUp(t *testing.T) {
	echo := startEcho(t)
	e := startEndpoint(t, ssmendpoint.Config{Unpaced: true, ResumeGrace: time.Minute})
	const giveUp = 2 * time.Second
	tun, err := ssm.New(t.Context(), ssm.Config{API: slowResume{ssmClient(e), 2 * giveUp}, Target: testTarget,
		Port: echo.port(), GiveUp: giveUp, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	c, err := tun.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 1)
	go func() { errc <- echoRoundTrip(t.Context(), c, 4<<20, 3) }()
	if n := e.CutWebsockets(); n != 1 {
		t.Fatalf("cut %d websockets, want 1", n)
	}
	if err := <-errc; err != nil {
		t.Fatalf("transfer across a slow resume: %v", err)
	}
	if st, cs := e.Stats(), tun.Stats(); st.SessionsStarted != 1 || cs.Resumes != 1 {
		t.Fatalf("sessions %d, resumes %d: want the one session, resumed once", st.SessionsStarted, cs.Resumes)
	}
}
