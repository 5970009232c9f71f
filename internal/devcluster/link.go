package devcluster

import (
	"fmt"
	"io"
	"net"
	"sync"
)

// Link is a loopback TCP proxy on one network path of a cluster, such as
// from a Patroni member to etcd, that can be cut to make a partition: while
// it is cut, its connections are closed and new ones are closed as soon as
// they are accepted, as a peer behind a firewall that rejects would be.
type Link struct {
	lis     net.Listener
	backend string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewLink listens on a free port of 127.0.0.1 and forwards to backend
// (host:port) until Close.
func NewLink(backend string) (*Link, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy to %s: %w", backend, err)
	}
	l := &Link{lis: lis, backend: backend, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.serve()
	return l, nil
}

// Addr is the address to dial instead of the backend's.
func (l *Link) Addr() string { return l.lis.Addr().String() }

// Cut closes every connection through the link and refuses new ones until
// Heal.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for c := range l.conns {
		_ = c.Close()
	}
}

// Heal lets connections through again.
func (l *Link) Heal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = false
}

// Close stops listening, closes every connection and waits for the copying
// goroutines.
func (l *Link) Close() error {
	err := l.lis.Close()
	l.Cut()
	l.wg.Wait()
	return err
}

func (l *Link) serve() {
	defer l.wg.Done()
	for {
		client, err := l.lis.Accept()
		if err != nil {
			return // closed
		}
		if !l.track(client) {
			continue
		}
		l.wg.Add(1)
		go l.forward(client)
	}
}

// track remembers c so that Cut can close it, or closes it at once and
// returns false if the link is cut.
func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		_ = c.Close()
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
	_ = c.Close()
}

// forward copies both ways until either side ends, then closes both.
func (l *Link) forward(client net.Conn) {
	defer l.wg.Done()
	defer l.untrack(client)
	server, err := net.Dial("tcp", l.backend)
	if err != nil {
		return // the backend is down: the client sees the connection close
	}
	if !l.track(server) {
		return
	}
	defer l.untrack(server)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(server, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, server); done <- struct{}{} }()
	<-done // either side ended or was cut: close both, which ends the other
	_ = client.Close()
	_ = server.Close()
	<-done
}
