// Command controlplane is meshform's test control plane: one embedded etcd and
// any number of real kube-apiservers (each with the controller-manager
// controllers meshform depends on) on loopback, in one process.
//
// It owns only test infrastructure. It must never be imported by, or shipped
// with, meshform itself, and it listens on 127.0.0.1 only.
//
// Usage:
//
//	controlplane [-dir DIR] [-ready-file FILE] [CLUSTER-NAME...]
//
// When every named cluster serves, it prints one JSON line to stdout (and
// writes it to -ready-file if given):
//
//	{"ready":true,"kubeconfig":PATH,"control":"127.0.0.1:PORT","clusters":{NAME:{...}}}
//
// It stops, removing every process, port and file it made, on SIGTERM, SIGINT
// or when its standard input closes; the last lets a crashed test process
// clean up after itself.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

func main() {
	os.Exit(run())
}

func run() int {
	dir := flag.String("dir", "", "directory for state (default: a new temporary directory, removed on exit)")
	readyFile := flag.String("ready-file", "", "also write the ready line to this file")
	flag.Parse()

	// Loopback clients of the apiservers would otherwise log their own deprecation warnings.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})

	root := *dir
	removeRoot := false
	if root == "" {
		var err error
		root, err = os.MkdirTemp("", "meshform-controlplane-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
			return 1
		}
		removeRoot = true
	}

	plane, err := newPlane(root)
	if err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
		if removeRoot {
			os.RemoveAll(root)
		}
		return 1
	}
	defer func() {
		plane.close()
		if removeRoot {
			os.RemoveAll(root)
		}
		klog.Flush()
	}()

	stop := make(chan string, 3)
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() { stop <- (<-signals).String() }()
	go func() {
		// Nothing is ever read from stdin; its closing is the parent's death notice.
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop <- "stdin closed"
	}()

	started := make(chan error, 1)
	go func() {
		_, err := plane.addClusters(flag.Args())
		started <- err
	}()
	select {
	case err := <-started:
		if err != nil {
			fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
			return 1
		}
	case why := <-stop:
		fmt.Fprintf(os.Stderr, "controlplane: stopping before ready (%s)\n", why)
		return 1
	}

	line, err := json.Marshal(plane.readyLine())
	if err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
		return 1
	}
	if *readyFile != "" {
		if err := writeFileAtomic(*readyFile, append(line, '\n')); err != nil {
			fmt.Fprintf(os.Stderr, "controlplane: %v\n", err)
			return 1
		}
		defer os.Remove(*readyFile)
	}
	fmt.Println(string(line))

	why := <-stop
	fmt.Fprintf(os.Stderr, "controlplane: stopping (%s)\n", why)
	return 0
}
