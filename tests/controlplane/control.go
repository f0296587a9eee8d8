package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"time"
)

// controlServer is the plane's loopback HTTP endpoint for tests:
//
//	GET    /clusters                  every cluster (clusterInfo)
//	POST   /clusters                  {"names":[...]} start fresh clusters; answers
//	                                  {"kubeconfig":PATH,"clusters":[clusterInfo...]}
//	DELETE /clusters/{id}             stop a cluster and delete its data
//	POST   /clusters/{id}/stop        stop its apiserver (its port then refuses connections)
//	POST   /clusters/{id}/start       start it again: same port, same data
//	PUT    /clusters/{id}/latency     {"ms":N} delay each client request by N ms (0 clears)
//	POST   /clusters/{id}/faults      add an HTTP fault (faults.go); answers {"fired":N}
//	GET    /clusters/{id}/faults      {"fired":N}: requests faults have hit so far
//	DELETE /clusters/{id}/faults      clear the cluster's HTTP faults
//	POST   /gc                        run a full garbage collection now
//	GET    /memstats                  {"gcs":N,"allocated_bytes":N,"heap_bytes":N} so far
//	POST   /profile/start             start a CPU profile of the whole plane
//	POST   /profile/stop              stop it; answers the profile (pprof format)
//
// With many clusters in one process the heap is gigabytes and one collection
// costs seconds of CPU, as much as the load measured: benchmarks collect
// before a window and count the collections in it, so that one falling
// into a window by chance is not read as the load's cost. The profile
// brackets a load exactly (bench/curve's BENCH_PROFILE: where the
// plane's CPU goes under apply and under the same requests from curl), which
// net/http/pprof's fixed-duration profile cannot.
//
// {id} is a cluster id, or a name that exactly one cluster has. Errors are
// {"error":MESSAGE} with a 4xx or 5xx status.
type controlServer struct {
	addr   string
	server *http.Server
}

func newControlServer(p *plane) (*controlServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /clusters", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, p.list())
	})
	mux.HandleFunc("POST /clusters", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Names []string `json:"names"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			fail(w, http.StatusBadRequest, err)
			return
		}
		infos, err := p.addClusters(req.Names)
		if err != nil {
			fail(w, http.StatusInternalServerError, err)
			return
		}
		kubeconfig := ""
		if len(infos) > 0 {
			kubeconfig = infos[0].Kubeconfig
		}
		reply(w, http.StatusOK, map[string]any{"kubeconfig": kubeconfig, "clusters": infos})
	})
	withCluster := func(f func(http.ResponseWriter, *http.Request, *cluster)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, err := p.lookup(r.PathValue("id"))
			if err != nil {
				fail(w, http.StatusNotFound, err)
				return
			}
			f(w, r, c)
		}
	}
	mux.HandleFunc("DELETE /clusters/{id}", withCluster(func(w http.ResponseWriter, r *http.Request, c *cluster) {
		p.removeClusters([]*cluster{c})
		reply(w, http.StatusOK, map[string]string{"deleted": c.id})
	}))
	mux.HandleFunc("POST /clusters/{id}/stop", withCluster(func(w http.ResponseWriter, r *http.Request, c *cluster) {
		c.stop()
		reply(w, http.StatusOK, c.info())
	}))
	mux.HandleFunc("POST /clusters/{id}/start", withCluster(func(w http.ResponseWriter, r *http.Request, c *cluster) {
		if err := c.start(); err != nil {
			fail(w, http.StatusInternalServerError, err)
			return
		}
		reply(w, http.StatusOK, c.info())
	}))
	mux.HandleFunc("PUT /clusters/{id}/latency", withCluster(func(w http.ResponseWriter, r *http.Request, c *cluster) {
		var req struct {
			Millis int64 `json:"ms"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Millis < 0 {
			fail(w, http.StatusBadRequest, err)
			return
		}
		c.proxy.setLatency(time.Duration(req.Millis) * time.Millisecond)
		reply(w, http.StatusOK, c.info())
	}))
	mux.HandleFunc("POST /clusters/{id}/faults", withCluster(func(w http.ResponseWriter, r *http.Request, c *cluster) {
		var fault httpFault
		if err := json.NewDecoder(r.Body).Decode(&fault); err != nil {
			fail(w, http.StatusBadRequest, err)
			return
		}
		if err := c.faults.set(fault); err != nil {
			fail(w, http.StatusBadRequest, err)
			return
		}
		reply(w, http.StatusOK, map[string]int{"fired": c.faults.firedCount()})
	}))
	mux.HandleFunc("GET /clusters/{id}/faults", withCluster(func(w http.ResponseWriter, r *http.Request, c *cluster) {
		reply(w, http.StatusOK, map[string]int{"fired": c.faults.firedCount()})
	}))
	mux.HandleFunc("DELETE /clusters/{id}/faults", withCluster(func(w http.ResponseWriter, r *http.Request, c *cluster) {
		c.faults.clear()
		reply(w, http.StatusOK, map[string]int{"fired": c.faults.firedCount()})
	}))

	mux.HandleFunc("POST /gc", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		reply(w, http.StatusOK, memstats())
	})
	mux.HandleFunc("GET /memstats", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, memstats())
	})
	var profiling sync.Mutex
	var profile *bytes.Buffer
	mux.HandleFunc("POST /profile/start", func(w http.ResponseWriter, r *http.Request) {
		profiling.Lock()
		defer profiling.Unlock()
		if profile != nil {
			fail(w, http.StatusConflict, errors.New("a profile is already running"))
			return
		}
		buf := new(bytes.Buffer)
		if err := pprof.StartCPUProfile(buf); err != nil {
			fail(w, http.StatusInternalServerError, err)
			return
		}
		profile = buf
		reply(w, http.StatusOK, map[string]bool{"profiling": true})
	})
	mux.HandleFunc("POST /profile/stop", func(w http.ResponseWriter, r *http.Request) {
		profiling.Lock()
		defer profiling.Unlock()
		if profile == nil {
			fail(w, http.StatusConflict, errors.New("no profile is running"))
			return
		}
		pprof.StopCPUProfile()
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(profile.Bytes())
		profile = nil
	})

	s := &controlServer{addr: ln.Addr().String(), server: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = s.server.Serve(ln) }()
	return s, nil
}

func (s *controlServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.server.Shutdown(ctx)
}

// memstats is what benchmarks read of the plane's collector (the runtime
// reads these without stopping the world, unlike runtime.ReadMemStats).
func memstats() map[string]uint64 {
	samples := []metrics.Sample{
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
	}
	metrics.Read(samples)
	return map[string]uint64{
		"gcs":             samples[0].Value.Uint64(),
		"allocated_bytes": samples[1].Value.Uint64(),
		"heap_bytes":      samples[2].Value.Uint64(),
	}
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, err error) {
	msg := "bad request"
	if err != nil {
		msg = err.Error()
	}
	reply(w, status, map[string]string{"error": msg})
}
