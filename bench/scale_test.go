package bench

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestParseSizes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"10000", []int{10000}},
		{"10000,100000, 1000000", []int{10000, 100000, 1000000}},
		{"1999", nil},
		{"10000,", nil},
		{"1e6", nil},
	} {
		got, err := ParseSizes(tc.in)
		if (err != nil) != (tc.want == nil) || !slices.Equal(got, tc.want) {
			t.Errorf("ParseSizes(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// scaleReport is a scale run at 10,000 and 1,000,000 blobs whose figures at the second are the
// first's times grow, start-up and peak memory aside.
func scaleReport(grow, startup, peak float64) *Report {
	first := map[string]stat{metricStartup: one(0.1), metricEvict: one(1), metricPeakRSS: one(30)}
	big := map[string]stat{metricStartup: one(startup), metricEvict: one(grow), metricPeakRSS: one(peak)}
	for i, k := range scaleRequests {
		first[k] = one(float64(i + 1))
		big[k] = one(float64(i+1) * grow)
	}
	r := &Report{Scenarios: []*Scenario{
		{Name: scaleName(10000), Metrics: first, Ratios: map[string]float64{}},
		{Name: scaleName(1000000), Metrics: big, Ratios: map[string]float64{}},
	}}
	r.Targets = scaleTargets(r, []int{10000, 1000000})
	return r
}

func TestScaleTargets(t *testing.T) {
	met := func(r *Report) []bool {
		var m []bool
		for _, tg := range r.Targets {
			m = append(m, tg.Met)
		}
		return m
	}
	for _, tc := range []struct {
		name                string
		grow, startup, peak float64
		want                []bool // start-up, eviction, memory, slowest request
	}{
		{"all met", 1.5, 0.2, 60, []bool{true, true, true, true}},
		{"twice is the bound", 2, 5, 256, []bool{true, true, true, true}},
		{"everything grows", 3, 5.1, 300, []bool{false, false, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := scaleReport(tc.grow, tc.startup, tc.peak)
			if got := met(r); !slices.Equal(got, tc.want) {
				t.Errorf("met = %v, want %v (%+v)", got, tc.want, r.Targets)
			}
		})
	}
}

func TestWriteScaleTable(t *testing.T) {
	r := scaleReport(3, 0.2, 60)
	r.Machine = map[string]string{"host": "h", "cpus": "2"}
	var b bytes.Buffer
	r.WriteScaleTable(&b, []int{10000, 1000000})
	out := b.String()
	for _, want := range []string{"N=10000", "N=1000000", metricEvict, "3.00 (3.00×)", "MISSED", "slowest request at N=1000000"} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
}
