// Command chartcheck is test infrastructure for meshform's Helm chart
// (deploy/meshform) and alert rules (deploy/alerts.yaml); tests/chart.rs
// builds and runs it.
//
//	chartcheck helm ARGS...  runs Helm itself (helm.sh/helm/v4 cmd/helm's
//	                         main, minus the cloud auth plugins: the tests
//	                         only lint and template)
//	chartcheck rules         reads a Prometheus rules file on stdin, checks it
//	                         as `promtool check rules` does (Prometheus's
//	                         model/rulefmt) and prints one JSON line per problem,
//	                         {"error":"..."}, then one per rule with the metrics
//	                         its expr selects: {"alert":"X","metrics":["a","b"]}
//
// Both live in one program so that one module is fetched and one binary built.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	helmcmd "helm.sh/helm/v4/pkg/cmd"
	"helm.sh/helm/v4/pkg/kube"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: chartcheck helm ARGS... | chartcheck rules < rules.yaml")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "helm":
		helm(os.Args[2:])
	case "rules":
		if err := rules(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "chartcheck rules:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "chartcheck: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

// helm is cmd/helm/helm.go's main (helm.sh/helm/v4@v4.3.2).
func helm(args []string) {
	kube.ManagedFieldsManager = "helm"
	cmd, err := helmcmd.NewRootCmd(os.Stdout, args, helmcmd.SetupLogging)
	if err != nil {
		slog.Warn("command failed", slog.Any("error", err))
		os.Exit(1)
	}
	// cobra reads os.Args unless told otherwise, and there the first is "helm".
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		if cerr, ok := errors.AsType[helmcmd.CommandError](err); ok {
			os.Exit(cerr.ExitCode)
		}
		os.Exit(1)
	}
}

type result struct {
	Alert   string   `json:"alert,omitempty"`
	Metrics []string `json:"metrics,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// rules validates a rules file as `promtool check rules` does (rulefmt.Parse:
// unknown fields, durations, label names, every expr and annotation template),
// then lists the metrics each expr selects.
func rules(in io.Reader, out io.Writer) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(out)
	defer w.Flush()
	enc := json.NewEncoder(w)
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.Parse(raw, false, model.UTF8Validation, p)
	for _, e := range errs {
		if err := enc.Encode(result{Error: e.Error()}); err != nil {
			return err
		}
	}
	if groups == nil {
		return nil
	}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = r.Record
			}
			res := result{Alert: name}
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				res.Error = err.Error()
			} else {
				seen := map[string]bool{}
				parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
					if vs, ok := node.(*parser.VectorSelector); ok {
						seen[vs.Name] = true
					}
					return nil
				})
				for m := range seen {
					res.Metrics = append(res.Metrics, m)
				}
				sort.Strings(res.Metrics)
			}
			if err := enc.Encode(res); err != nil {
				return err
			}
		}
	}
	return nil
}
