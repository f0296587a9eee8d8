package main

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// proxy is a TCP relay in front of one apiserver. Its port is the cluster's
// public address and survives restarts (the apiserver gets a fresh backend
// port on each start). TLS passes through untouched, so clients verify the
// apiserver's own certificate.
//
// The listener is held from the cluster's creation to its removal, never
// closed and reopened: a port given back to the kernel, even for a moment, can
// be taken by any other socket of the process (an apiserver's listener, a
// client's outgoing connection), which failed planes of 30+ clusters with
// "address already in use". While the cluster is stopped, connections are
// accepted and reset at once, so a client fails as fast as against a closed
// port.
//
// Latency: every chunk read from the client waits for the configured delay
// before it is forwarded, so each request on a kept-alive connection is held
// at least that long. Responses are not delayed.
type proxy struct {
	addr  string
	delay atomic.Int64 // nanoseconds
	ln    net.Listener

	mu      sync.Mutex
	backend string // "" while the cluster is stopped
	closed  bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func newProxy() (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	go p.accept()
	return p, nil
}

func (p *proxy) latency() time.Duration { return time.Duration(p.delay.Load()) }

func (p *proxy) setLatency(d time.Duration) { p.delay.Store(int64(d)) }

// open starts relaying the public port to backend.
func (p *proxy) open(backend string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("proxy %s is closed", p.addr)
	}
	p.backend = backend
	return nil
}

// shut stops relaying, so new connections are reset, and cuts every open
// connection, as an apiserver that went away would.
func (p *proxy) shut() {
	p.mu.Lock()
	p.backend = ""
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// close gives the port back; the proxy cannot be opened again.
func (p *proxy) close() {
	p.shut()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
}

// track registers a relayed connection and returns the backend to dial, or
// "" (with c closed) when the cluster is stopped.
func (p *proxy) track(c net.Conn) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.backend == "" {
		reset(c)
		return ""
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	return p.backend
}

// reset closes c with an RST instead of a FIN, as the kernel answers a
// connection to a port nobody listens on.
func reset(c net.Conn) {
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	c.Close()
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
	p.wg.Done()
}

func (p *proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		backend := p.track(client)
		if backend == "" {
			continue
		}
		go func() {
			defer p.untrack(client)
			server, err := net.DialTimeout("tcp", backend, 5*time.Second)
			if err != nil {
				return
			}
			p.mu.Lock()
			stopped := p.backend != backend
			if !stopped {
				p.conns[server] = struct{}{}
			}
			p.mu.Unlock()
			if stopped {
				server.Close()
				return
			}
			defer func() {
				p.mu.Lock()
				delete(p.conns, server)
				p.mu.Unlock()
				server.Close()
			}()
			done := make(chan struct{}, 2)
			go func() {
				_, _ = io.Copy(client, server)
				done <- struct{}{}
			}()
			go func() {
				p.relayDelayed(server, client)
				done <- struct{}{}
			}()
			<-done
		}()
	}
}

// relayDelayed copies src to dst, each chunk held back by the latency set
// when it arrived: a pipe with that one-way delay, like a long network path.
// Chunks in flight overlap, so requests multiplexed on one connection
// (HTTP/2) are delayed once each, not one after the other.
func (p *proxy) relayDelayed(dst, src net.Conn) {
	type chunk struct {
		data []byte
		due  time.Time
	}
	chunks := make(chan chunk, 1024)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, 32*1024)
			n, err := src.Read(buf)
			if n > 0 {
				chunks <- chunk{data: buf[:n], due: time.Now().Add(p.latency())}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.data); err != nil {
			// Keep the reader unblocked until src closes with the connection.
			go func() {
				for range chunks {
				}
			}()
			return
		}
	}
}
