package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
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

	s := &controlServer{addr: ln.Addr().String(), server: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() { _ = s.server.Serve(ln) }()
	return s, nil
}

func (s *controlServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.server.Shutdown(ctx)
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
