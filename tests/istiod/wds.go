package main

// Ambient mode: istiod run as an ambient multi-network control plane, asked
// for workloads as ztunnel asks (the workload discovery API, WDS, over delta
// xDS). See README.md, "Ambient mode".

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"istio.io/istio/pkg/model"
	"istio.io/istio/pkg/workloadapi"
)

// globalServiceLabel marks a Service global in ambient multi-network mode:
// the ambient profile's meshConfig.serviceScopeConfigs selects it
// (manifests/charts/istio-control/istio-discovery/files/profile-ambient.yaml).
// Only global Services of other networks reach ztunnel, through their
// network's gateway (pilot/pkg/serviceregistry/ambient/services.go,
// matchServiceScope; multicluster.go, the coalesced workloads).
const globalServiceLabel = "istio.io/global"

// ambientEnvironment is what the ambient profile and the ambient multicluster
// guide give istiod's container: pilot/pkg/features/ambient.go reads both at
// package init (AMBIENT_ENABLE_MULTI_NETWORK only when PILOT_ENABLE_AMBIENT
// is set, registerAmbient).
func ambientEnvironment(o options) []string {
	if !o.ambient {
		return nil
	}
	return []string{"PILOT_ENABLE_AMBIENT=true", "AMBIENT_ENABLE_MULTI_NETWORK=true"}
}

// gatewayControllersOff turns off what istiod does to the Gateway API
// Gateways of the cluster it serves (pilot/pkg/features/experimental.go): the
// deployment controller would create a Deployment and a LoadBalancer Service
// per Gateway (copying the Gateway's network label onto the Service), the
// status writer would rewrite status.addresses from that Service, and the
// GatewayClass controller would create the default classes. The test plane
// runs no pods and no load balancers: the tests stand in for the gateway
// controller and write the status a gateway's load balancer gets, which
// istiod must not overwrite. Reading Gateways (the network gateways of both
// registries) is unaffected. Without the Gateway API CRDs the three are idle.
var gatewayControllersOff = []string{
	"PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER=false",
	"PILOT_ENABLE_GATEWAY_API_STATUS=false",
	"PILOT_ENABLE_GATEWAY_API_GATEWAYCLASS_CONTROLLER=false",
}

// ambientMeshConfig is the ambient profile's serviceScopeConfigs, added to
// the mesh config in ambient mode.
func ambientMeshConfig(o options) string {
	if !o.ambient {
		return ""
	}
	return fmt.Sprintf(`serviceScopeConfigs:
- servicesSelector:
    matchExpressions:
    - key: %s
      operator: In
      values: ["true"]
  scope: GLOBAL
`, globalServiceLabel)
}

// gatewayAddressView is a workload's network_gateway: where ztunnel sends
// traffic for it (HBONE, double-encrypted, to the gateway's port).
type gatewayAddressView struct {
	// Address is "NETWORK/IP" for an address, "NAMESPACE/HOSTNAME" for a hostname.
	Address   string `json:"address"`
	HBONEPort uint32 `json:"hbone_port"`
}

// workloadView is one istio.workload.Workload as ztunnel last received it.
type workloadView struct {
	UID       string   `json:"uid"`
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Addresses []string `json:"addresses"`
	Network   string   `json:"network"`
	Cluster   string   `json:"cluster"`
	// NetworkGateway is set for a workload of another network: ztunnel
	// reaches it through this gateway, never at its own addresses.
	NetworkGateway *gatewayAddressView `json:"network_gateway,omitempty"`
	// Services are the "namespace/hostname" keys of the workload's services.
	Services []string `json:"services"`
	// Capacity is the count of workloads a coalesced (split-horizon) workload
	// stands for; 0 when unset.
	Capacity uint32 `json:"capacity"`
	Status   string `json:"status"`
}

type ztunnelView struct {
	Name      string `json:"name"`
	Network   string `json:"network"`
	Cluster   string `json:"cluster"`
	Connected bool   `json:"connected"`
	Error     string `json:"error,omitempty"`
	// Workloads as last pushed, by uid order; services istiod sends on the
	// same stream are left out.
	Workloads []workloadView `json:"workloads"`
}

// ztunnelClient holds one delta xDS stream to istiod's plaintext xDS port,
// subscribed as ztunnel subscribes: a wildcard on
// type.googleapis.com/istio.workload.Address (istiod serves every address
// then; pilot/pkg/xds/workload.go, WorkloadGenerator.GenerateDeltas, and
// pilot/pkg/xds/delta.go, deltaWatchedResources: "*" or no names is a
// wildcard), ACKing every response. ztunnel also subscribes to
// istio.security.Authorization, which this needs not.
type ztunnelClient struct {
	addr string
	spec proxySpec
	node *core.Node

	mu        sync.Mutex
	connected bool
	err       string
	received  map[string]*workloadapi.Address
}

func newZtunnelClient(addr string, spec proxySpec, index int, o options) *ztunnelClient {
	// ztunnel's node: type ztunnel, its pod IP and name in the mesh namespace
	// (istiod parses it in pilot/pkg/model/context.go,
	// ParseServiceNodeWithMetadata; the type decides IsZTunnel, which needs
	// PILOT_ENABLE_AMBIENT, pilot/pkg/xds/ads.go). An IP no pod has.
	ip := fmt.Sprintf("10.253.%d.%d", index/250, index%250+1)
	pod := "ztunnel-" + spec.Name
	meta := &structpb.Struct{Fields: map[string]*structpb.Value{
		"ISTIO_VERSION": structpb.NewStringValue("1.31.0"),
		"CLUSTER_ID":    structpb.NewStringValue(spec.Cluster),
		"NETWORK":       structpb.NewStringValue(spec.Network),
		"NAMESPACE":     structpb.NewStringValue(o.namespace),
		"NODE_NAME":     structpb.NewStringValue("node-" + spec.Name),
	}}
	return &ztunnelClient{
		addr:     addr,
		spec:     spec,
		received: map[string]*workloadapi.Address{},
		node: &core.Node{
			Id:       fmt.Sprintf("ztunnel~%s~%s.%s~%s.svc.cluster.local", ip, pod, o.namespace, o.namespace),
			Metadata: meta,
		},
	}
}

// run keeps a stream open until stop, reconnecting after a failure. A new
// stream starts from nothing, as a restarted ztunnel does.
func (z *ztunnelClient) run(stop <-chan struct{}) {
	for {
		err := z.stream(stop)
		z.mu.Lock()
		z.connected = false
		z.received = map[string]*workloadapi.Address{}
		if err != nil {
			z.err = err.Error()
		}
		z.mu.Unlock()
		select {
		case <-stop:
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (z *ztunnelClient) stream(stop <-chan struct{}) error {
	conn, err := grpc.NewClient(z.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{
		Node:                   z.node,
		TypeUrl:                model.AddressType,
		ResourceNamesSubscribe: []string{"*"},
	}); err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		update := map[string]*workloadapi.Address{}
		for _, res := range resp.Resources {
			addr := &workloadapi.Address{}
			if err := proto.Unmarshal(res.GetResource().GetValue(), addr); err != nil {
				return fmt.Errorf("unreadable istio.workload.Address %q: %v", res.Name, err)
			}
			update[res.Name] = addr
		}
		z.mu.Lock()
		z.connected = true
		z.err = ""
		// Delta: only what changed, and the names removed.
		for name, addr := range update {
			z.received[name] = addr
		}
		for _, name := range resp.RemovedResources {
			delete(z.received, name)
		}
		z.mu.Unlock()
		if err := stream.Send(&discovery.DeltaDiscoveryRequest{
			TypeUrl:       model.AddressType,
			ResponseNonce: resp.Nonce,
		}); err != nil {
			return err
		}
	}
}

func (z *ztunnelClient) view() ztunnelView {
	z.mu.Lock()
	defer z.mu.Unlock()
	v := ztunnelView{
		Name:      z.spec.Name,
		Network:   z.spec.Network,
		Cluster:   z.spec.Cluster,
		Connected: z.connected,
		Error:     z.err,
		Workloads: []workloadView{},
	}
	for _, addr := range z.received {
		if w := addr.GetWorkload(); w != nil {
			v.Workloads = append(v.Workloads, describeWorkload(w))
		}
	}
	sort.Slice(v.Workloads, func(i, j int) bool { return v.Workloads[i].UID < v.Workloads[j].UID })
	return v
}

func describeWorkload(w *workloadapi.Workload) workloadView {
	v := workloadView{
		UID:       w.GetUid(),
		Name:      w.GetName(),
		Namespace: w.GetNamespace(),
		Addresses: ipStrings(w.GetAddresses()),
		Network:   w.GetNetwork(),
		Cluster:   w.GetClusterId(),
		Services:  []string{},
		Capacity:  w.GetCapacity().GetValue(),
		Status:    w.GetStatus().String(),
	}
	for svc := range w.GetServices() {
		v.Services = append(v.Services, svc)
	}
	sort.Strings(v.Services)
	if gw := w.GetNetworkGateway(); gw != nil {
		g := &gatewayAddressView{HBONEPort: gw.GetHboneMtlsPort()}
		switch {
		case gw.GetAddress() != nil:
			ips := ipStrings([][]byte{gw.GetAddress().GetAddress()})
			g.Address = gw.GetAddress().GetNetwork() + "/" + strings.Join(ips, "")
		case gw.GetHostname() != nil:
			g.Address = gw.GetHostname().GetNamespace() + "/" + gw.GetHostname().GetHostname()
		}
		v.NetworkGateway = g
	}
	return v
}

func ipStrings(raw [][]byte) []string {
	out := make([]string, 0, len(raw))
	for _, b := range raw {
		if ip, ok := netip.AddrFromSlice(b); ok {
			out = append(out, ip.String())
		} else {
			out = append(out, fmt.Sprintf("invalid:%x", b))
		}
	}
	return out
}
