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
// Latency: every chunk read from the client waits for the configured delay
// before it is forwarded, so each request on a kept-alive connection is held
// at least that long. Responses are not delayed.
type proxy struct {
	addr  string
	delay atomic.Int64 // nanoseconds

	mu      sync.Mutex
	ln      net.Listener
	backend string
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func newProxy() (*proxy, error) {
	// Reserve a port now so that the kubeconfig can name it before the first start.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	return &proxy{addr: addr, conns: map[net.Conn]struct{}{}}, nil
}

func (p *proxy) latency() time.Duration { return time.Duration(p.delay.Load()) }

func (p *proxy) setLatency(d time.Duration) { p.delay.Store(int64(d)) }

// open starts accepting on the public port and relaying to backend.
func (p *proxy) open(backend string) error {
	var ln net.Listener
	var err error
	// The port was ours a moment ago; retry briefly in case the kernel still holds it.
	for attempt := 0; attempt < 50; attempt++ {
		ln, err = net.Listen("tcp", p.addr)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("reopening %s: %w", p.addr, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.backend = backend
	p.mu.Unlock()
	p.wg.Add(1)
	go p.accept(ln, backend)
	return nil
}

// shut closes the listener, so new connections are refused, and cuts every
// open connection, as an apiserver that went away would.
func (p *proxy) shut() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *proxy) accept(ln net.Listener, backend string) {
	defer p.wg.Done()
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		if !p.track(client) {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(client)
			server, err := net.DialTimeout("tcp", backend, 5*time.Second)
			if err != nil {
				return
			}
			if !p.track(server) {
				return
			}
			defer p.untrack(server)
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
