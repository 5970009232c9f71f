package chaos

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// minRequestBytes tells a request from HTTP/2 housekeeping in the bytes a
// client sends: a ping frame is 17 bytes, a window update 13, a settings
// acknowledgement 9; a gRPC call's HEADERS and DATA frames are more.
const minRequestBytes = 40

// proxyCutDelay is how long a cut connection keeps swallowing the server's
// bytes before it closes: long enough for ledgerd to commit the request it
// forwarded, so that the response is lost after the commit.
const proxyCutDelay = 150 * time.Millisecond

// proxy is a loopback TCP proxy in front of one ledgerd. Armed with cut, it
// forwards the next request it sees, swallows everything the server sends
// back, and then closes both sides: every call in flight on that
// connection loses its response, and the client retries.
type proxy struct {
	lis     net.Listener
	backend string

	armed atomic.Int64 // cuts still to make
	cuts  atomic.Int64 // cuts made

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// newProxy listens on a free loopback port and forwards to backend.
func newProxy(backend string) (*proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{lis: lis, backend: backend, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// addr is the proxy's address, which clients dial.
func (p *proxy) addr() string { return p.lis.Addr().String() }

// cut arms the proxy to cut the connections of the next n requests.
func (p *proxy) cut(n int) { p.armed.Add(int64(n)) }

// disarm drops the cuts not made yet.
func (p *proxy) disarm() { p.armed.Store(0) }

// close stops listening, closes every connection and waits for the
// copying goroutines.
func (p *proxy) close() error {
	err := p.lis.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.lis.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.handle(client)
	}
}

// track remembers c, so that close can close it.
func (p *proxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = struct{}{}
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
	_ = c.Close()
}

func (p *proxy) handle(client net.Conn) {
	defer p.wg.Done()
	p.track(client)
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", p.backend, time.Second)
	if err != nil {
		return // ledgerd is down: the client sees the connection close
	}
	p.track(server)
	defer p.untrack(server)

	var blackhole atomic.Bool // the server's bytes are swallowed
	done := make(chan struct{}, 2)
	go func() { // server → client
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 && !blackhole.Load() {
				if _, werr := client.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() { // client → server
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
				if n >= minRequestBytes && p.take() {
					blackhole.Store(true)
					time.Sleep(proxyCutDelay)
					p.cuts.Add(1)
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	<-done // either side ended, or a cut: close both, which ends the other
	_ = client.Close()
	_ = server.Close()
	<-done
}

// take uses up one armed cut, if there is one.
func (p *proxy) take() bool {
	for {
		n := p.armed.Load()
		if n <= 0 {
			return false
		}
		if p.armed.CompareAndSwap(n, n-1) {
			return true
		}
	}
}
