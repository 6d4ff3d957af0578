package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// idleMem is the RSS that idle connections through one SSM path added to
// the client-side process and to the server, per connection.
type idleMem struct {
	conns                int
	clientKiB, serverKiB float64
}

func (m *idleMem) client() string { return m.format(func(m *idleMem) float64 { return m.clientKiB }) }
func (m *idleMem) server() string { return m.format(func(m *idleMem) float64 { return m.serverKiB }) }

func (m *idleMem) format(f func(*idleMem) float64) string {
	if m == nil {
		return "-"
	}
	return strconv.FormatFloat(f(m), 'f', 1, 64)
}

// ssmIdle opens n idle connections through p, as idleMemory does for the
// relay path, and reports the RSS each adds to p's client-side process and
// to the server; it closes them before it returns. Run on a fresh client
// process, before any transfer, so that no freed bulk buffer hides what
// the connections hold; the server is shared with earlier paths and its
// heap may already have room, so its figure is a lower bound.
func (b *bench) ssmIdle(p *ssmPath, srv *proc, n int) (*idleMem, error) {
	client0, server0 := p.proc.rss(), srv.rss()
	var conns []*pgx.Conn
	defer func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	}()
	for range n {
		c, err := b.ssmConnect(p, "idle")
		if err != nil {
			return nil, fmt.Errorf("idle connection: %w", err)
		}
		conns = append(conns, c)
	}
	time.Sleep(time.Second) // let RSS settle after the last handshake, as idleMemory does
	return &idleMem{conns: n, clientKiB: float64(p.proc.rss()-client0) / float64(n),
		serverKiB: float64(srv.rss()-server0) / float64(n)}, nil
}
