package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"istio.io/istio/pkg/model"
)

// proxySpec is a sidecar to ask as: its network (ISTIO_META_NETWORK, from
// the injector's values.global.network) and its cluster (ISTIO_META_CLUSTER_ID).
type proxySpec struct {
	Name    string
	Network string
	Cluster string
}

type endpointView struct {
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	// Cluster is the cluster id istiod gives the endpoint in its metadata
	// (the last field of istio.workload; a gateway's is the gateway's cluster).
	Cluster string `json:"cluster"`
	// TLSMode is envoy.transport_socket_match.tlsMode ("istio" for mTLS).
	TLSMode string `json:"tls_mode"`
	Weight  uint32 `json:"weight"`
}

type proxyView struct {
	Name      string `json:"name"`
	Network   string `json:"network"`
	Cluster   string `json:"cluster"`
	Connected bool   `json:"connected"`
	// Error is the last stream error, if the stream is down.
	Error string `json:"error,omitempty"`
	// Endpoints by HOST:PORT, as last pushed; a service istiod has not
	// answered for yet is absent.
	Endpoints map[string][]endpointView `json:"endpoints"`
}

// proxyClient holds one ADS stream to istiod's plaintext xDS port, as a
// sidecar does (an Envoy's bootstrap points at 15010 when it runs without
// mTLS to istiod), asking for EDS only: the clusters of the given services,
// named as istiod names outbound clusters (outbound|PORT||HOST). Istio's own
// pkg/adsc would also ask for listeners and routes after the first EDS
// answer, which this needs neither of.
type proxyClient struct {
	addr     string
	spec     proxySpec
	node     *core.Node
	clusters map[string]string // cluster name -> HOST:PORT

	mu        sync.Mutex
	connected bool
	err       string
	received  map[string]*endpoint.ClusterLoadAssignment
}

func newProxyClient(addr string, spec proxySpec, index int, o options, services []string) *proxyClient {
	clusters := map[string]string{}
	for _, svc := range services {
		host, port, _ := strings.Cut(svc, ":")
		// As istiod names outbound clusters (pilot/pkg/model/service.go, BuildSubsetKey).
		clusters[fmt.Sprintf("outbound|%s||%s", port, host)] = svc
	}
	// A workload IP no pod has: the proxy is a client only, which istiod
	// serves like any sidecar whose pod it has not seen.
	ip := fmt.Sprintf("10.254.%d.%d", index/250, index%250+1)
	workload := "sleep-" + spec.Name
	meta := &structpb.Struct{Fields: map[string]*structpb.Value{
		"ISTIO_VERSION": structpb.NewStringValue("1.31.0"),
		"CLUSTER_ID":    structpb.NewStringValue(spec.Cluster),
		"NETWORK":       structpb.NewStringValue(spec.Network),
		"MESH_ID":       structpb.NewStringValue(o.meshID),
		"NAMESPACE":     structpb.NewStringValue("sample"),
		"WORKLOAD_NAME": structpb.NewStringValue(workload),
	}}
	return &proxyClient{
		addr:     addr,
		spec:     spec,
		clusters: clusters,
		received: map[string]*endpoint.ClusterLoadAssignment{},
		node: &core.Node{
			Id:       fmt.Sprintf("sidecar~%s~%s.sample~sample.svc.cluster.local", ip, workload),
			Metadata: meta,
		},
	}
}

// run keeps a stream open until stop, reconnecting after a failure.
func (p *proxyClient) run(stop <-chan struct{}) {
	for {
		err := p.stream(stop)
		p.mu.Lock()
		p.connected = false
		if err != nil {
			p.err = err.Error()
		}
		p.mu.Unlock()
		select {
		case <-stop:
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (p *proxyClient) stream(stop <-chan struct{}) error {
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(p.clusters))
	for name := range p.clusters {
		names = append(names, name)
	}
	sort.Strings(names)
	if err := stream.Send(&discovery.DiscoveryRequest{
		Node:          p.node,
		TypeUrl:       model.EndpointType,
		ResourceNames: names,
	}); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		update := map[string]*endpoint.ClusterLoadAssignment{}
		for _, res := range resp.Resources {
			cla := &endpoint.ClusterLoadAssignment{}
			if err := proto.Unmarshal(res.Value, cla); err != nil {
				return fmt.Errorf("unreadable ClusterLoadAssignment: %v", err)
			}
			update[cla.ClusterName] = cla
		}
		p.mu.Lock()
		p.connected = true
		p.err = ""
		// EDS answers may carry only the clusters that changed.
		for name, cla := range update {
			p.received[name] = cla
		}
		p.mu.Unlock()
		// ACK, as Envoy does, so istiod keeps pushing.
		if err := stream.Send(&discovery.DiscoveryRequest{
			TypeUrl:       model.EndpointType,
			ResourceNames: names,
			VersionInfo:   resp.VersionInfo,
			ResponseNonce: resp.Nonce,
		}); err != nil {
			return err
		}
	}
}

func (p *proxyClient) view() proxyView {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := proxyView{
		Name:      p.spec.Name,
		Network:   p.spec.Network,
		Cluster:   p.spec.Cluster,
		Connected: p.connected,
		Error:     p.err,
		Endpoints: map[string][]endpointView{},
	}
	for name, cla := range p.received {
		svc, ok := p.clusters[name]
		if !ok {
			continue
		}
		eps := []endpointView{}
		for _, locality := range cla.Endpoints {
			for _, lb := range locality.LbEndpoints {
				eps = append(eps, describe(lb))
			}
		}
		sort.Slice(eps, func(i, j int) bool {
			if eps[i].Address != eps[j].Address {
				return eps[i].Address < eps[j].Address
			}
			return eps[i].Port < eps[j].Port
		})
		v.Endpoints[svc] = eps
	}
	return v
}

func describe(lb *endpoint.LbEndpoint) endpointView {
	var v endpointView
	if sa := lb.GetEndpoint().GetAddress().GetSocketAddress(); sa != nil {
		v.Address = sa.GetAddress()
		v.Port = sa.GetPortValue()
	}
	v.Weight = lb.GetLoadBalancingWeight().GetValue()
	meta := lb.GetMetadata().GetFilterMetadata()
	// istio.workload is "name;namespace;canonical name;revision;cluster"
	// (pilot/pkg/networking/util/util.go, AppendLbEndpointMetadata).
	if workload := meta["istio"].GetFields()["workload"].GetStringValue(); workload != "" {
		parts := strings.Split(workload, ";")
		v.Cluster = parts[len(parts)-1]
	}
	v.TLSMode = meta["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue()
	return v
}
