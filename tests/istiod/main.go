// Command istiod runs a real istiod (istio.io/istio/pilot/pkg/bootstrap,
// built the way pilot-discovery's `discovery` command builds it) for one
// primary cluster of meshform's test control plane, and asks it through xDS,
// as sidecars of given networks and clusters, for the endpoints of given
// Services.
//
// It is test infrastructure for meshform: the Rust helper in
// tests/support/istiod.rs starts it, reads its stdout and stops it by closing
// its stdin. See README.md for what istiod writes and where.
//
// Every line on stdout is one JSON snapshot, printed when anything in it
// changes:
//
//	{"ready":true,"cluster_id":"east1","root_cert":"-----BEGIN CERTIFICATE-----…",
//	 "proxies":[{"name":"east1","network":"east","cluster":"east1","connected":true,
//	   "endpoints":{"echo.sample.svc.cluster.local:80":[
//	     {"address":"10.11.0.1","port":8080,"cluster":"east1","tls_mode":"istio","weight":1}]}}],
//	 "networkz":[{"Network":"east","Cluster":"east1","Addr":"192.0.2.11","Port":15443,…}],
//	 "clusterz":[{"id":"east1","secretName":"","syncStatus":"synced"},…],
//	 "writes":[{"method":"POST","path":"/api/v1/namespaces/istio-system/secrets","count":1}]}
//
// "endpoints" is istiod's own EDS answer to that proxy (cluster
// outbound|PORT||HOST), as the proxy last received it; "networkz" and
// "clusterz" are the bodies of istiod's /debug/networkz and /debug/clusterz;
// "writes" lists every request other than a read that istiod sent to the
// API server of the cluster it serves. Istio's logs go to stderr.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"istio.io/istio/pilot/pkg/bootstrap"
	"istio.io/istio/pilot/pkg/serviceregistry/provider"
	"istio.io/istio/pkg/cluster"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/log"
	"k8s.io/client-go/kubernetes"
)

// How often the snapshot is rebuilt (and the debug endpoints read).
const pollInterval = 200 * time.Millisecond

// childMarker is set in the environment of the re-executed process; see
// reexecWithEnvironment.
const childMarker = "MESHFORM_ISTIOD_CHILD"

type proxyFlags []proxySpec

func (p *proxyFlags) String() string { return fmt.Sprint(*p) }

// Set parses NAME=NETWORK,CLUSTER.
func (p *proxyFlags) Set(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	network, clusterID, ok2 := strings.Cut(rest, ",")
	if !ok || !ok2 || name == "" || clusterID == "" {
		return fmt.Errorf("want NAME=NETWORK,CLUSTER, got %q", v)
	}
	*p = append(*p, proxySpec{Name: name, Network: network, Cluster: clusterID})
	return nil
}

type serviceFlags []string

func (s *serviceFlags) String() string { return strings.Join(*s, ",") }

// Set parses HOST:PORT, the Service's host name and port.
func (s *serviceFlags) Set(v string) error {
	host, port, ok := strings.Cut(v, ":")
	if _, err := strconv.ParseUint(port, 10, 16); !ok || host == "" || err != nil {
		return fmt.Errorf("want HOST:PORT, got %q", v)
	}
	*s = append(*s, v)
	return nil
}

type options struct {
	kubeconfig  string
	kubeContext string
	clusterID   string
	namespace   string
	meshID      string
	workDir     string
	rootCA      string
	proxies     proxyFlags
	services    serviceFlags
	// externalIstiod: EXTERNAL_ISTIOD, istiod also manages the remotes whose
	// mesh namespace names it (topology.istio.io/controlPlaneClusters).
	externalIstiod bool
	// ambient: run as an ambient multi-network control plane (wds.go).
	ambient  bool
	ztunnels proxyFlags
	// caCerts: start on the cluster's cacerts Secret (csr.go).
	caCerts bool
	// workloadCert: NAMESPACE/SERVICEACCOUNT to ask the CA for a certificate as (csr.go).
	workloadCert string
}

func main() {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the primary istiod serves (its config cluster)")
	flag.StringVar(&o.kubeContext, "context", "", "context in the kubeconfig")
	flag.StringVar(&o.clusterID, "cluster-id", "", "istiod's cluster id (CLUSTER_ID): the primary's mesh name")
	flag.StringVar(&o.namespace, "namespace", constants.IstioSystemNamespace, "the mesh namespace (istiod's POD_NAMESPACE)")
	flag.StringVar(&o.meshID, "mesh-id", "", "the mesh id (values.global.meshID)")
	flag.StringVar(&o.workDir, "work-dir", "", "directory for istiod's files (mesh config, kubeconfig); a temporary one if empty")
	flag.StringVar(&o.rootCA, "root-ca", "", "plug in an intermediate CA signed by the root CA in this directory "+
		"(root-cert.pem, root-key.pem); istiod's own self-signed CA if empty")
	flag.BoolVar(&o.caCerts, "cacerts", false, "plug in the cluster's own cacerts Secret (of the mesh namespace), "+
		"written where its volume would be mounted (./etc/cacerts)")
	flag.StringVar(&o.workloadCert, "workload-cert", "", "ask istiod's CA, as a sidecar of NAMESPACE/SERVICEACCOUNT does, "+
		"for a workload certificate on the secure gRPC port (then enabled); print the chain")
	makeRootDir := flag.String("make-root", "", "only write a new root CA into this directory, and exit")
	flag.Var(&o.proxies, "proxy", "ask as this sidecar: NAME=NETWORK,CLUSTER (repeatable)")
	flag.Var(&o.services, "service", "ask for the endpoints of HOST:PORT (repeatable)")
	flag.BoolVar(&o.externalIstiod, "external-istiod", false, "run with EXTERNAL_ISTIOD: also manage the remotes "+
		"whose mesh namespace names this cluster id in topology.istio.io/controlPlaneClusters")
	flag.BoolVar(&o.ambient, "ambient", false, "run with PILOT_ENABLE_AMBIENT and AMBIENT_ENABLE_MULTI_NETWORK, "+
		"services labelled istio.io/global=true global (the ambient profile)")
	flag.Var(&o.ztunnels, "ztunnel", "ask for workloads as this ztunnel (WDS, delta xDS): NAME=NETWORK,CLUSTER (repeatable; needs -ambient)")
	flag.Parse()
	if *makeRootDir != "" {
		if err := makeRoot(*makeRootDir); err != nil {
			fmt.Fprintln(os.Stderr, "istiod:", err)
			os.Exit(1)
		}
		return
	}
	if o.kubeconfig == "" || o.clusterID == "" || o.meshID == "" || (o.caCerts && o.rootCA != "") {
		fmt.Fprintln(os.Stderr, "usage: istiod -kubeconfig PATH [-context NAME] -cluster-id ID -mesh-id MESH "+
			"[-namespace NS] [-root-ca DIR | -cacerts] [-workload-cert NS/SA] [-external-istiod] [-proxy NAME=NETWORK,CLUSTER]... [-service HOST:PORT]... "+
			"[-ambient [-ztunnel NAME=NETWORK,CLUSTER]...]")
		os.Exit(2)
	}
	if os.Getenv(childMarker) == "" {
		if err := reexecWithEnvironment(o); err != nil {
			fmt.Fprintln(os.Stderr, "istiod:", err)
			os.Exit(1)
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "istiod:", err)
		os.Exit(1)
	}
}

// reexecWithEnvironment replaces this process with itself, with the
// environment an istiod Deployment gives its container
// (manifests/charts/istio-control/istio-discovery/templates/deployment.yaml).
// Istio reads its settings from the environment when its packages are
// initialised (pilot/pkg/features, pilot/pkg/bootstrap/options.go), before
// main runs, so setting them from main would be too late.
func reexecWithEnvironment(o options) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	env := os.Environ()
	env = append(env,
		childMarker+"=1",
		"CLUSTER_ID="+o.clusterID,
		"POD_NAMESPACE="+o.namespace,
		// Its identity in leader elections (the Deployment's pod name).
		"POD_NAME=istiod-"+o.clusterID+"-test",
		"REVISION=default",
		// Never the in-cluster configuration: only the kubeconfig given.
		"KUBERNETES_SERVICE_HOST=",
		// pilot/pkg/features/pilot.go; read by checkShouldLead in
		// pilot/pkg/serviceregistry/kube/controller/multicluster.go.
		"EXTERNAL_ISTIOD="+strconv.FormatBool(o.externalIstiod),
	)
	env = append(env, gatewayControllersOff...)
	env = append(env, ambientEnvironment(o)...)
	return syscall.Exec(self, os.Args, env)
}

func run(o options) error {
	stop := make(chan struct{})
	// Closing stdin is the orderly stop: the test process holds it open.
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()

	// stdout carries the snapshots; Istio logs to stdout by default.
	logOptions := log.DefaultOptions()
	logOptions.OutputPaths = []string{"stderr"}
	logOptions.ErrorOutputPaths = []string{"stderr"}
	if err := log.Configure(logOptions); err != nil {
		return fmt.Errorf("configuring Istio's log: %v", err)
	}

	// Paths from the command line are taken before the chdir below.
	for _, path := range []*string{&o.kubeconfig, &o.rootCA, &o.workDir} {
		if *path == "" {
			continue
		}
		abs, err := filepath.Abs(*path)
		if err != nil {
			return err
		}
		*path = abs
	}
	workDir := o.workDir
	if workDir == "" {
		dir, err := os.MkdirTemp("", "meshform-istiod-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		workDir = dir
	}
	// istiod's relative defaults (./etc/cacerts for plugged-in CA
	// certificates, pilot/pkg/bootstrap/istio_ca.go LocalCertDir;
	// ./var/lib/istio/inject for injection templates) resolve under the work
	// directory. Nothing is put under var/: istiod reads the injector
	// ConfigMap instead. Under etc/cacerts goes an intermediate CA when a
	// root is given, where the cacerts Secret would be mounted; without one,
	// istiod creates its own self-signed CA (the istio-ca-secret Secret).
	if err := os.Chdir(workDir); err != nil {
		return err
	}
	if o.rootCA != "" {
		if err := plugInIntermediate(o.rootCA, filepath.Join("etc", "cacerts"), o.clusterID); err != nil {
			return fmt.Errorf("plugging in CA certificates: %v", err)
		}
	}

	// istiod reaches its cluster only through the recording proxy.
	restConfig, err := kube.DefaultRestConfig(o.kubeconfig, o.kubeContext)
	if err != nil {
		return fmt.Errorf("kube config: %v", err)
	}
	if o.caCerts {
		if err := writeCACerts(kubernetes.NewForConfigOrDie(restConfig), o.namespace, filepath.Join("etc", "cacerts")); err != nil {
			return fmt.Errorf("plugging in cacerts: %v", err)
		}
	}
	recorder, proxyKubeconfig, err := startRecordingProxy(restConfig, stop)
	if err != nil {
		return fmt.Errorf("starting the recording proxy: %v", err)
	}
	kubeconfigPath := filepath.Join(workDir, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, proxyKubeconfig, 0o600); err != nil {
		return err
	}
	meshConfig, meshNetworks := filepath.Join(workDir, "mesh"), filepath.Join(workDir, "meshNetworks")
	if err := os.WriteFile(meshConfig, []byte(meshConfigYAML(o)), 0o600); err != nil {
		return err
	}
	// Gateways come from labelled Services only (what meshform writes), not meshNetworks.
	if err := os.WriteFile(meshNetworks, []byte("networks: {}\n"), 0o600); err != nil {
		return err
	}

	httpAddr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	grpcAddr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	args := pilotArgs(o, kubeconfigPath, meshConfig, meshNetworks, httpAddr, grpcAddr)
	var workload *workloadRequester
	if o.workloadCert != "" {
		// The CA service is on the secure port when there is one
		// (pilot/pkg/bootstrap/server.go startCA), with istiod's DNS
		// certificate from its own CA, as sidecars reach it (15012).
		if args.ServerOptions.SecureGRPCAddr, err = freeLoopbackAddr(); err != nil {
			return err
		}
		workload, err = newWorkloadRequester(restConfig, o.workloadCert, o.clusterID, o.namespace,
			args.ServerOptions.SecureGRPCAddr, workDir)
		if err != nil {
			return err
		}
	}
	if err := args.Complete(); err != nil {
		return err
	}
	server, err := bootstrap.NewServer(args)
	if err != nil {
		return fmt.Errorf("creating istiod: %v", err)
	}
	if err := server.Start(stop); err != nil {
		return fmt.Errorf("starting istiod: %v", err)
	}
	var rootCert string
	if server.CA != nil {
		rootCert = string(server.CA.GetCAKeyCertBundle().GetRootCertPem())
	}

	if workload != nil {
		go workload.run(stop)
	}
	proxies := make([]*proxyClient, 0, len(o.proxies))
	for i, spec := range o.proxies {
		p := newProxyClient(grpcAddr, spec, i, o, o.services)
		go p.run(stop)
		proxies = append(proxies, p)
	}
	ztunnels := make([]*ztunnelClient, 0, len(o.ztunnels))
	for i, spec := range o.ztunnels {
		z := newZtunnelClient(grpcAddr, spec, i, o)
		go z.run(stop)
		ztunnels = append(ztunnels, z)
	}

	out := bufio.NewWriter(os.Stdout)
	debug := &http.Client{Timeout: 5 * time.Second}
	var last []byte
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for running := true; running; {
		s := snapshot{
			ClusterID: o.clusterID,
			RootCert:  rootCert,
			Ready:     get(debug, httpAddr, "/ready") != nil,
			Networkz:  rawJSON(get(debug, httpAddr, "/debug/networkz")),
			Clusterz:  rawJSON(get(debug, httpAddr, "/debug/clusterz")),
			Proxies:   make([]proxyView, 0, len(proxies)),
			Writes:    recorder.writes(),
		}
		if workload != nil {
			s.Workload = workload.view()
		}
		for _, p := range proxies {
			s.Proxies = append(s.Proxies, p.view())
		}
		for _, z := range ztunnels {
			s.Ztunnels = append(s.Ztunnels, z.view())
		}
		line, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if !bytes.Equal(line, last) {
			_, _ = out.Write(append(line, '\n'))
			if err := out.Flush(); err != nil {
				// Nobody reads any more: the test process is gone.
				break
			}
			last = line
		}
		select {
		case <-stdinClosed:
			running = false
		case <-ticker.C:
		}
	}
	close(stop)
	server.WaitUntilCompletion()
	return nil
}

type snapshot struct {
	// Ready is istiod's own readiness (its /ready endpoint answers 200).
	Ready     bool        `json:"ready"`
	ClusterID string      `json:"cluster_id"`
	RootCert  string      `json:"root_cert"`
	Proxies   []proxyView `json:"proxies"`
	// Ztunnels: one per -ztunnel, the workloads istiod last sent it.
	Ztunnels []ztunnelView `json:"ztunnels,omitempty"`
	// Networkz and Clusterz are istiod's debug answers as it gives them.
	Networkz json.RawMessage `json:"networkz"`
	Clusterz json.RawMessage `json:"clusterz"`
	Writes   []write         `json:"writes"`
	// Workload is what istiod's CA answered a sidecar (-workload-cert).
	Workload *workloadCert `json:"workload,omitempty"`
}

// pilotArgs are pilot-discovery's defaults (pilot/cmd/pilot-discovery/app/cmd.go,
// addFlags) with every listener on loopback: the plaintext xDS port and the
// HTTP port (debug, readiness, webhooks, monitoring) on free ports; the
// secure xDS port, the separate webhook and monitoring ports and ControlZ off.
func pilotArgs(o options, kubeconfig, meshConfig, meshNetworks, httpAddr, grpcAddr string) *bootstrap.PilotArgs {
	return bootstrap.NewPilotArgs(func(p *bootstrap.PilotArgs) {
		p.Namespace = o.namespace
		p.CniNamespace = o.namespace
		p.InjectionOptions = bootstrap.InjectionOptions{InjectionDirectory: "./var/lib/istio/inject"}
		p.RegistryOptions.Registries = []string{string(provider.Kubernetes)}
		p.RegistryOptions.ClusterRegistriesNamespace = o.namespace
		p.RegistryOptions.KubeConfig = kubeconfig
		p.RegistryOptions.KubeOptions.DomainSuffix = constants.DefaultClusterLocalDomain
		p.RegistryOptions.KubeOptions.ClusterID = cluster.ID(o.clusterID)
		p.RegistryOptions.KubeOptions.ClusterAliases = map[string]string{}
		p.RegistryOptions.KubeOptions.KubernetesAPIQPS = 80
		p.RegistryOptions.KubeOptions.KubernetesAPIBurst = 160
		p.MeshConfigFile = meshConfig
		p.NetworksConfigFile = meshNetworks
		p.ShutdownDuration = time.Second
		p.ServerOptions = bootstrap.DiscoveryServerOptions{
			HTTPAddr: httpAddr,
			GRPCAddr: grpcAddr,
			// Empty: webhooks and monitoring are served on HTTPAddr
			// (server.go initServers), the secure xDS port is off.
			HTTPSAddr:       "",
			SecureGRPCAddr:  "",
			MonitoringAddr:  "",
			EnableProfiling: false,
			TLSOptions:      bootstrap.TLSOptions{TLSMinVersion: bootstrap.TLSMinVersion1_2},
		}
		// No ControlZ introspection port.
		p.CtrlZOptions = nil
	})
}

// meshConfigYAML is what the istio-discovery chart renders into the `mesh`
// key of the `istio` ConfigMap (templates/configmap.yaml) for this mesh.
func meshConfigYAML(o options) string {
	return fmt.Sprintf(`trustDomain: cluster.local
rootNamespace: %[1]s
defaultConfig:
  meshId: %[2]q
  discoveryAddress: istiod.%[1]s.svc:15012
`, o.namespace, o.meshID) + ambientMeshConfig(o)
}

// freeLoopbackAddr asks the kernel for a free port on 127.0.0.1. istiod
// listens on it moments later; it does not report ports it chose itself.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// get returns the body of a 200 answer from istiod's HTTP port, else nil.
func get(client *http.Client, addr, path string) []byte {
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	if len(body) == 0 {
		// /ready answers 200 with no body.
		return []byte{}
	}
	return body
}

func rawJSON(body []byte) json.RawMessage {
	if len(body) == 0 || !json.Valid(body) {
		return json.RawMessage("null")
	}
	return json.RawMessage(body)
}
