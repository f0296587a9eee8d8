// promparse reads a scrape's body on stdin and parses it as the Prometheus
// server's scrape loop does (github.com/prometheus/prometheus/model/textparse
// New, scrape/scrape.go): the parser is chosen by the response's Content-Type,
// given as the only argument, with no fallback. Each series is written as a
// JSON line {"name","type","labels","value"} (the type from the family's TYPE
// line; a histogram's _bucket, _sum and _count are series of their own). A body
// the parser refuses, or a Content-Type it does not know, exits 1 with
// Prometheus's error, so a malformed exposition fails the test that scraped it.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
)

type sample struct {
	Name   string            `json:"name"`
	Type   string            `json:"type"`
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "promparse:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return errors.New("usage: promparse CONTENT-TYPE < body")
	}
	body, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	parser, err := textparse.New(body, os.Args[1], labels.NewSymbolTable(), textparse.ParserOptions{})
	if err != nil {
		return err
	}
	if parser == nil {
		return fmt.Errorf("no parser for Content-Type %q", os.Args[1])
	}
	types := map[string]string{}
	out := json.NewEncoder(os.Stdout)
	for {
		entry, err := parser.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch entry {
		case textparse.EntryType:
			name, typ := parser.Type()
			types[string(name)] = string(typ)
		case textparse.EntrySeries:
			_, _, value := parser.Series()
			var lset labels.Labels
			parser.Labels(&lset)
			s := sample{Name: lset.Get(labels.MetricName), Labels: map[string]string{}, Value: value}
			s.Type = types[family(s.Name, types)]
			lset.Range(func(l labels.Label) {
				if l.Name != labels.MetricName {
					s.Labels[l.Name] = l.Value
				}
			})
			if err := out.Encode(s); err != nil {
				return err
			}
		}
	}
}

// family is the metric family a series belongs to: a histogram's series carry
// a suffix its TYPE line does not.
func family(name string, types map[string]string) string {
	if _, ok := types[name]; ok {
		return name
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count", "_total", "_created"} {
		if base, ok := cut(name, suffix); ok {
			if _, ok := types[base]; ok {
				return base
			}
		}
	}
	return name
}

func cut(s, suffix string) (string, bool) {
	if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}
