package ssm

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// Reconnect schedule, like the plugin's (§3): a random 100–199 ms first
// delay, doubled per attempt, back to the first delay past 5 s; 5 attempts.
const (
	resumeAttempts   = 5
	resumeMaxDelay   = 5 * time.Second
	resumeDialBudget = 15 * time.Second
)

// errSessionOver means ResumeSession returned no token: the session ended.
var errSessionOver = errors.New("Session Manager says the session is over (terminated or timed out)")

// resume reconnects the data channel after the websocket failed with cause
// (§2.3, §7.5): ResumeSession, a new websocket, a new OpenDataChannel.
// Sequence numbers and buffers carry on; retransmission fills the gap.
func (s *session) resume(cause error) error {
	s.ws.markBroken()
	s.ch.PathDown()
	s.log.Info("websocket to Session Manager lost; resuming the session", "err", cause)
	first := 100*time.Millisecond + rand.N(100*time.Millisecond)
	delay := first
	timer := time.NewTimer(delay)
	defer timer.Stop()
	var last error
	for range resumeAttempts {
		select {
		case <-timer.C:
		case <-s.ch.Done():
			return s.ch.Err()
		}
		ctx, cancel := context.WithTimeout(s.ctx, resumeDialBudget)
		err := s.reconnect(ctx)
		cancel()
		if err == nil {
			s.resumes.Add(1)
			s.log.Info("session resumed")
			return nil
		}
		if last = err; errors.Is(err, errSessionOver) {
			break
		}
		if delay *= 2; delay > resumeMaxDelay {
			delay = first
		}
		timer.Reset(delay)
	}
	return fmt.Errorf("lost the websocket to Session Manager (%v) and could not resume the session: %w", cause, last)
}

func (s *session) reconnect(ctx context.Context) error {
	out, err := s.p.api.ResumeSession(ctx, &ssm.ResumeSessionInput{SessionId: aws.String(s.id)})
	if err != nil {
		return fmt.Errorf("ssm ResumeSession: %w", err)
	}
	if aws.ToString(out.TokenValue) == "" {
		return errSessionOver
	}
	url := aws.ToString(out.StreamUrl)
	if url == "" {
		url = s.streamURL
	}
	ws, err := dialDataChannel(ctx, s.p.dialer, url, OpenDataChannel{
		TokenValue: aws.ToString(out.TokenValue), ClientID: s.p.clientID, ClientVersion: s.p.clientVersion})
	if err != nil {
		return err
	}
	s.ch.NewPath(func() { s.ws.swap(ws) })
	return nil
}
