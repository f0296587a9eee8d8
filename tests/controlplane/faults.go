package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
)

// httpFault is a fault at the HTTP level, injected in front of one
// apiserver's handler chain, where a TCP relay cannot reach: TLS ends here.
// It fires on requests with the given method and path (and, when set, a body
// containing a string), `Times` times, then clears itself.
//
//   - "commit_then_timeout": the request is served in full (a create
//     commits) and the client is answered 504 Timeout, as kube-apiserver's
//     timeout filter answers when a handler outlives the request deadline
//     and goes on in the background
//     (k8s.io/apiserver/pkg/server/filters/timeout.go, no Retry-After).
//   - "stall_body": the response's headers and the first half of its body
//     are sent, then nothing more until the client gives up: a link that
//     died mid-response, with the connection still open.
type httpFault struct {
	Kind         string `json:"kind"`
	Method       string `json:"method"`
	Path         string `json:"path"`
	BodyContains string `json:"body_contains,omitempty"`
	Times        int    `json:"times"`
}

// faults holds a cluster's HTTP faults; they outlive apiserver restarts.
type faults struct {
	mu    sync.Mutex
	list  []*httpFault
	fired int
}

func (f *faults) set(fault httpFault) error {
	switch fault.Kind {
	case "commit_then_timeout", "stall_body":
	default:
		return fmt.Errorf("unknown fault kind %q (commit_then_timeout, stall_body)", fault.Kind)
	}
	if fault.Method == "" || fault.Path == "" {
		return fmt.Errorf("a fault needs a method and a path")
	}
	if fault.Times <= 0 {
		fault.Times = 1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = append(f.list, &fault)
	return nil
}

func (f *faults) clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = nil
}

// firedCount is how many requests a fault has hit since the plane started.
func (f *faults) firedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fired
}

// take returns the fault r triggers, counting it down.
func (f *faults) take(r *http.Request, body []byte) *httpFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, fault := range f.list {
		if fault.Method != r.Method || fault.Path != r.URL.Path {
			continue
		}
		if fault.BodyContains != "" && !bytes.Contains(body, []byte(fault.BodyContains)) {
			continue
		}
		fault.Times--
		if fault.Times == 0 {
			f.list = append(f.list[:i], f.list[i+1:]...)
		}
		f.fired++
		return fault
	}
	return nil
}

func (f *faults) armed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.list) > 0
}

// wrap puts the faults in front of handler (the whole chain, authentication
// included, so a faulted request is served exactly as any other).
func (f *faults) wrap(handler http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.armed() {
			handler.ServeHTTP(w, r)
			return
		}
		var body []byte
		if r.Body != nil {
			var err error
			body, err = io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		fault := f.take(r, body)
		if fault == nil {
			handler.ServeHTTP(w, r)
			return
		}
		served := httptest.NewRecorder()
		handler.ServeHTTP(served, r)
		switch fault.Kind {
		case "commit_then_timeout":
			status := map[string]any{
				"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
				"status": "Failure", "reason": "Timeout", "code": http.StatusGatewayTimeout,
				"message": "Timeout: request did not complete within the allotted timeout",
				"details": map[string]any{},
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusGatewayTimeout)
			_ = json.NewEncoder(w).Encode(status)
		case "stall_body":
			for k, v := range served.Header() {
				if !strings.EqualFold(k, "Content-Length") {
					w.Header()[k] = v
				}
			}
			w.WriteHeader(served.Code)
			full := served.Body.Bytes()
			_, _ = w.Write(full[:len(full)/2])
			if flusher, ok := w.(http.Flusher); ok {
				flusher.Flush()
			}
			<-r.Context().Done()
		}
	})
}
