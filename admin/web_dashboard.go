package admin

import (
	"net/http"
	"strconv"
	"time"

	"cove/auth"
)

// The dashboard page: the mirror's counters, its chart per minute, the upstreams and the nodes.

func (w *webPages) handleDashboard(rw http.ResponseWriter, r *http.Request, who auth.Principal) {
	if !who.Admin {
		http.Redirect(rw, r, "/projects", http.StatusSeeOther)
		return
	}
	var st mirrorStatus
	if err := w.api(r, "/api/v2.0/mirror/status", &st); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	d := newDashboard(st)
	if err := w.api(r, "/api/v2.0/cluster/nodes", &d.Nodes); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	if err := w.api(r, "/api/v2.0/system/scrub", &d.Scrub); err != nil {
		w.failed(rw, r, who, err)
		return
	}
	w.render(rw, r, who, "dashboard", "nav.dashboard", d)
}

// dashboard is the dashboard's view model, with the chart's polylines drawn here.
type dashboard struct {
	mirrorStatus
	Ratio string
	Chart chart
	Nodes []Node // the fleet's, none on a single node
	// Scrub is the last scrub's result (Scrub.Last nil before the first).
	Scrub scrubStatus
}

// chart is the dashboard's SVG: bars above the base line, the time axis below it.
type chart struct {
	W, H  int
	Base  int // y of the time axis
	Max   int64
	Bars  []bar
	Ticks []tick
}

// bar is one minute of the chart: a hits bar and a misses bar side by side.
type bar struct {
	X, MissX, W              float64
	HitY, HitH, MissY, MissH float64
	Hits, Misses             int64
	Minute                   string // its time, as the axis writes it
}

// tick is a labelled time on the axis.
type tick struct {
	X     float64
	Label string
}

// tickEvery is the time between two ticks of the axis: six labels across the chart's hour.
const tickEvery = 10 * time.Minute

func newDashboard(st mirrorStatus) dashboard {
	d := dashboard{mirrorStatus: st, Ratio: strconv.FormatFloat(st.HitRatio*100, 'f', 1, 64) + "%"}
	d.Chart = chart{W: 720, H: 220, Base: 198, Max: 1}
	if len(st.History) == 0 {
		return d
	}
	for _, p := range st.History {
		d.Chart.Max = max(d.Chart.Max, p.Hits, p.Misses)
	}
	// The chart shows the last historyLen+1 minutes, the current one at the right. A bar stands
	// at its own minute, so a minute missing from the history leaves a gap, not a shift.
	slot := float64(d.Chart.W) / float64(historyLen+1)
	top := float64(d.Chart.Base - 24) // room for the legend
	base := float64(d.Chart.Base)
	last := st.History[len(st.History)-1].Time.UTC().Truncate(time.Minute)
	xOf := func(t time.Time) float64 {
		return float64(d.Chart.W) - float64(last.Sub(t.UTC().Truncate(time.Minute))/time.Minute+1)*slot
	}
	for _, p := range st.History {
		x := xOf(p.Time)
		if x < 0 {
			continue
		}
		hh := float64(p.Hits) * top / float64(d.Chart.Max)
		mh := float64(p.Misses) * top / float64(d.Chart.Max)
		d.Chart.Bars = append(d.Chart.Bars, bar{
			X: x, MissX: x + slot*0.45, W: slot * 0.4,
			HitY: base - hh, HitH: hh, MissY: base - mh, MissH: mh,
			Hits: p.Hits, Misses: p.Misses, Minute: p.Time.UTC().Format("15:04"),
		})
	}
	// Ticks at the round ten minutes of the window, under the middle of their minute's bars;
	// none under the axis's name at the left.
	first := last.Add(-historyLen * time.Minute)
	for t := first.Truncate(tickEvery); !t.After(last); t = t.Add(tickEvery) {
		x := xOf(t) + slot*0.425
		if t.Before(first) || x < 80 {
			continue
		}
		d.Chart.Ticks = append(d.Chart.Ticks, tick{X: x, Label: t.Format("15:04")})
	}
	return d
}

// projectRow is a row of the projects page: Manage says whether the visitor may delete it.
type projectRow struct {
	project
	Manage bool
	// Used and Hard are the storage quota's bytes (Hard -1: no limit), for members.
	HasQuota   bool
	Used, Hard int64
}

// The page offers only what the API would do for the visitor (Harbor's page does the same):
// buttons follow auth.Policy's decisions, which the API's handlers make again on every call.

// canCreateProject mirrors handleCreateProject: system admins, or every user when the setting
// project_creation_restriction is everyone.
