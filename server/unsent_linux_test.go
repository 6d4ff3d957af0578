package server

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Toward a reader at the SSM agent's pace (1 KiB a millisecond), a
// client's socket keeps at most unsentLimit, plus one write, queued but not
// yet sent, whatever the writer offers; so what a cancel must wait through
// at that pace is bounded too. (Without limitUnsent Linux lets the queue
// grow to megabytes here.)
func TestClientSocketKeepsLittleUnsent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reader, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	client, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	limitUnsent(client)

	go func() { // the agent: 1 KiB, then a millisecond's sleep
		buf := make([]byte, 1<<10)
		for {
			if _, err := reader.Read(buf); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	const chunk = 64 << 10 // the relay's largest write
	wrote := make(chan struct{})
	go func() { // the relay, as fast as it can
		defer close(wrote)
		client.SetWriteDeadline(time.Now().Add(3 * time.Second))
		for {
			if _, err := client.Write(make([]byte, chunk)); err != nil {
				return
			}
		}
	}()
	most := uint32(0)
	for range 250 {
		time.Sleep(10 * time.Millisecond)
		most = max(most, notSent(t, client))
	}
	<-wrote
	if most > unsentLimit+chunk {
		t.Fatalf("%d bytes queued unsent toward a paced reader; want at most %d", most, unsentLimit+chunk)
	}
	if most == 0 {
		t.Fatal("nothing was ever queued unsent: the reader kept up, so the test proves nothing")
	}
}

func notSent(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var ierr error
	rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if ierr != nil {
		t.Fatal(ierr)
	}
	return info.Notsent_bytes
}
