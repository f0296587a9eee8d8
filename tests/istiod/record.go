package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// write is one kind of request istiod sent that is not a read.
type write struct {
	Method string `json:"method"`
	// Path is the request's path, without the query.
	Path  string `json:"path"`
	Count int    `json:"count"`
}

// recorder counts, by method and path, every request through the proxy
// that is not a read (GET, HEAD, OPTIONS; watches are GETs). Bodies are
// never kept: they may hold secret data (istiod writes its CA key).
type recorder struct {
	mu     sync.Mutex
	counts map[[2]string]int
}

func (r *recorder) record(req *http.Request) {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[[2]string{req.Method, req.URL.Path}]++
}

func (r *recorder) writes() []write {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]write, 0, len(r.counts))
	for k, n := range r.counts {
		out = append(out, write{Method: k[0], Path: k[1], Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Method < out[j].Method
	})
	return out
}

// startRecordingProxy serves, on a free loopback port with a certificate of
// its own, a reverse proxy to the API server of upstream that adds
// upstream's credentials and records what passes (see recorder). It returns
// a kubeconfig for istiod that points at the proxy and holds no credentials.
//
// istiod here runs with the test plane's admin credentials, which RBAC does
// not bound the way the istiod ClusterRole of an install does; the record
// shows what it writes instead. It reaches every other cluster only through
// the remote secrets meshform wrote, whose reader role allows no writes but
// token and access reviews.
func startRecordingProxy(upstream *rest.Config, stop <-chan struct{}) (*recorder, []byte, error) {
	target, err := url.Parse(upstream.Host)
	if err != nil {
		return nil, nil, err
	}
	transport, err := rest.TransportFor(upstream)
	if err != nil {
		return nil, nil, err
	}
	rec := &recorder{counts: map[[2]string]int{}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
		Transport: transport,
		// Watches stream: pass every event on at once.
		FlushInterval: -1,
	}
	certPEM, cert, err := selfSignedLoopbackCert()
	if err != nil {
		return nil, nil, err
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			rec.record(req)
			proxy.ServeHTTP(w, req)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
	}
	go func() { _ = server.ServeTLS(listener, "", "") }()
	go func() {
		<-stop
		_ = server.Close()
	}()
	kubeconfig, err := yaml.Marshal(map[string]any{
		"apiVersion": "v1",
		"kind":       "Config",
		"clusters": []any{map[string]any{"name": "proxy", "cluster": map[string]any{
			"server":                     "https://" + listener.Addr().String(),
			"certificate-authority-data": certPEM,
		}}},
		"users":           []any{map[string]any{"name": "istiod", "user": map[string]any{}}},
		"contexts":        []any{map[string]any{"name": "proxy", "context": map[string]any{"cluster": "proxy", "user": "istiod"}}},
		"current-context": "proxy",
	})
	return rec, kubeconfig, err
}

// selfSignedLoopbackCert returns a certificate for 127.0.0.1, PEM and parsed.
func selfSignedLoopbackCert() ([]byte, tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "meshform istiod recording proxy"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("creating the proxy certificate: %v", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	return certPEM, cert, err
}
