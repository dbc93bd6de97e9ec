package main

import (
	"bytes"
	"fmt"
	"io"
	"slices"

	"golang.org/x/perf/benchfmt"
)

// results are one run's benchmark figures: the median of each metric of
// each benchmark, by name without GOMAXPROCS ("Versus/ACK-IPv4") and unit
// ("hbf-ns"), and the run's configuration (cpu, goos, ...).
type results struct {
	values map[string]map[string]float64
	config map[string]string
}

// readResults reads `go test -bench` output.
func readResults(r io.Reader, name string) (*results, error) {
	all := map[string]map[string][]float64{}
	res := &results{values: map[string]map[string]float64{}, config: map[string]string{}}
	rd := benchfmt.NewReader(r, name)
	for rd.Scan() {
		switch rec := rd.Result().(type) {
		case *benchfmt.SyntaxError:
			return nil, rec
		case *benchfmt.Result:
			for _, c := range rec.Config {
				if c.File {
					res.config[c.Key] = string(c.Value)
				}
			}
			key := benchName(rec.Name)
			if all[key] == nil {
				all[key] = map[string][]float64{}
			}
			for _, v := range rec.Values {
				// As the benchmark reported it: benchfmt turns "hbf-ns"
				// into seconds.
				unit, value := v.Unit, v.Value
				if v.OrigUnit != "" {
					unit, value = v.OrigUnit, v.OrigValue
				}
				all[key][unit] = append(all[key][unit], value)
			}
		}
	}
	if err := rd.Err(); err != nil {
		return nil, err
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("%s: no benchmark results: give it the output of make bench's go test -bench", name)
	}
	for key, units := range all {
		res.values[key] = map[string]float64{}
		for unit, vs := range units {
			slices.Sort(vs)
			res.values[key][unit] = vs[len(vs)/2]
		}
	}
	return res, nil
}

// benchName is a result's name without "Benchmark" and GOMAXPROCS.
func benchName(n benchfmt.Name) string {
	base, parts := n.Parts()
	if len(parts) > 0 && parts[len(parts)-1][0] == '-' {
		parts = parts[:len(parts)-1]
	}
	return string(bytes.TrimPrefix(base, []byte("Benchmark"))) + string(bytes.Join(parts, nil))
}

// get returns a metric, and whether the run measured it.
func (r *results) get(bench, unit string) (float64, bool) {
	v, ok := r.values[bench][unit]
	return v, ok
}
