package main

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/server/healthz"
	cacheddiscovery "k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/util/keyutil"
	"k8s.io/controller-manager/pkg/clientbuilder"
	"k8s.io/controller-manager/pkg/informerfactory"
	"k8s.io/klog/v2"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmconfig "k8s.io/kubernetes/cmd/kube-controller-manager/app/config"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	"k8s.io/kubernetes/cmd/kube-controller-manager/names"
	"k8s.io/kubernetes/pkg/controller/garbagecollector"
	serviceaccountcontroller "k8s.io/kubernetes/pkg/controller/serviceaccount"
	"k8s.io/kubernetes/pkg/serviceaccount"
)

// clusterControllers are the kube-controller-manager controllers whose
// effects meshform relies on: default ServiceAccounts in new namespaces,
// namespace deletion that finishes, and owner-reference garbage collection.
// The legacy token controller is added separately below.
var clusterControllers = []string{
	names.ServiceAccountController,
	names.NamespaceController,
	names.GarbageCollectorController,
}

// startControllers runs, in this process, the controllers above against one
// cluster, built from kube-controller-manager's own descriptors. It cannot use
// kcmapp.Run or CreateControllerContext: both register process-global names
// (configz, the "kube-controller-manager" informer name) that a second
// cluster would collide with. The returned channel closes when all stopped.
func startControllers(ctx context.Context, cfg *rest.Config, rootCA []byte, saKeyFile string) (chan struct{}, error) {
	componentConfig, err := kcmoptions.NewDefaultComponentConfig()
	if err != nil {
		return nil, err
	}
	componentConfig.Generic.ControllerStartInterval.Duration = 0
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	completed := (&kcmconfig.Config{ComponentConfig: componentConfig, Client: client, Kubeconfig: cfg}).Complete()
	resync := kcmapp.ResyncPeriod(completed)
	rootClientBuilder := clientbuilder.SimpleControllerClientBuilder{ClientConfig: cfg}

	sharedInformers := informers.NewSharedInformerFactory(client, resync())
	metadataClient, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	metadataInformers := metadatainformer.NewSharedInformerFactory(metadataClient, resync())
	discoveryClient, err := rootClientBuilder.DiscoveryClient("controller-discovery")
	if err != nil {
		return nil, err
	}
	restMapper := restmapper.NewDeferredDiscoveryRESTMapper(cacheddiscovery.NewMemCacheClient(discoveryClient))
	// CRDs appear at runtime; the mapper must learn them as upstream's does.
	go wait.Until(restMapper.Reset, 30*time.Second, ctx.Done())

	controllerContext := kcmapp.ControllerContext{
		ClientBuilder:                   rootClientBuilder,
		InformerFactory:                 sharedInformers,
		ObjectOrMetadataInformerFactory: informerfactory.NewInformerFactory(sharedInformers, metadataInformers),
		ComponentConfig:                 componentConfig,
		RESTMapper:                      restMapper,
		InformersStarted:                make(chan struct{}),
		ResyncPeriod:                    resync,
	}
	ignored := map[schema.GroupResource]struct{}{}
	for _, r := range componentConfig.GarbageCollectorController.GCIgnoredResources {
		ignored[schema.GroupResource{Group: r.Group, Resource: r.Resource}] = struct{}{}
	}
	controllerContext.GraphBuilder = garbagecollector.NewDependencyGraphBuilder(
		ctx, metadataClient, meta.ResettableRESTMapper(restMapper), ignored,
		controllerContext.ObjectOrMetadataInformerFactory, controllerContext.InformersStarted,
	)

	all := kcmapp.NewControllerDescriptors()
	wanted := map[string]*kcmapp.ControllerDescriptor{}
	for _, name := range clusterControllers {
		d, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("kube-controller-manager has no controller %q", name)
		}
		wanted[name] = d
	}
	controllers, err := kcmapp.BuildControllers(ctx, controllerContext, wanted, nil, noHealthChecks{})
	if err != nil {
		return nil, err
	}
	if len(controllers) != len(wanted) {
		return nil, fmt.Errorf("built %d of %d controllers", len(controllers), len(wanted))
	}

	tokens, err := newTokensController(ctx, controllerContext, rootCA, saKeyFile)
	if err != nil {
		return nil, err
	}
	controllers = append(controllers, tokens)

	sharedInformers.Start(ctx.Done())
	controllerContext.ObjectOrMetadataInformerFactory.Start(ctx.Done())
	close(controllerContext.InformersStarted)

	done := make(chan struct{})
	go func() {
		defer close(done)
		kcmapp.RunControllers(ctx, controllerContext, controllers, 0, 30*time.Second)
		sharedInformers.Shutdown()
		metadataInformers.Shutdown()
	}()
	return done, nil
}

// newTokensController fills legacy kubernetes.io/service-account-token
// Secrets, signing with the cluster's own key like kube-controller-manager's
// --service-account-private-key-file.
func newTokensController(ctx context.Context, cc kcmapp.ControllerContext, rootCA []byte, saKeyFile string) (kcmapp.Controller, error) {
	key, err := keyutil.PrivateKeyFromFile(saKeyFile)
	if err != nil {
		return nil, err
	}
	generator, err := serviceaccount.JWTTokenGenerator(serviceaccount.LegacyIssuer, key)
	if err != nil {
		return nil, err
	}
	client, err := cc.ClientBuilder.Client("tokens-controller")
	if err != nil {
		return nil, err
	}
	tc, err := serviceaccountcontroller.NewTokensController(
		klog.FromContext(ctx),
		cc.InformerFactory.Core().V1().ServiceAccounts(),
		cc.InformerFactory.Core().V1().Secrets(),
		client,
		serviceaccountcontroller.TokensControllerOptions{TokenGenerator: generator, RootCA: rootCA},
	)
	if err != nil {
		return nil, err
	}
	workers := int(cc.ComponentConfig.SAController.ConcurrentSATokenSyncs)
	return namedLoop{name: names.ServiceAccountTokenController, run: func(ctx context.Context) { tc.Run(ctx, workers) }}, nil
}

type namedLoop struct {
	name string
	run  func(context.Context)
}

func (l namedLoop) Name() string            { return l.name }
func (l namedLoop) Run(ctx context.Context) { l.run(ctx) }

// noHealthChecks drops the controllers' health checks: there is no
// controller-manager HTTP server to serve them.
type noHealthChecks struct{}

func (noHealthChecks) AddHealthChecker(...healthz.HealthChecker) {}
