package portal

import (
	"context"
	"time"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/webui"
)

// The readings the usage charts show: each cycle_end event's water and energy, and the
// mean drying temperature of each cycle's drying phase.
const (
	eventCycleEnd = "cycle_end"
	readingWater  = "water_used"
	readingEnergy = "energy_used"
	phaseDrying   = "drying"
	metricDrying  = "drying_temp"
	usageWeeks    = 12
)

type usageView struct {
	WaterCycles, EnergyCycles, DryingCycles webui.Chart
	WaterWeeks, EnergyWeeks                 webui.Chart
	Cycles                                  int
}

// usage builds the charts of appliance a: only data since its owner claimed it
// (a.Since), and at most UsageWindow back.
func (p *Portal) usage(ctx context.Context, a cloudstore.Appliance, now time.Time) (usageView, error) {
	from := a.Since
	if w := now.Add(-UsageWindow); w.After(from) {
		from = w
	}
	ends, err := p.cycleEnds(ctx, a.Device, from)
	if err != nil {
		return usageView{}, err
	}
	v := usageView{
		WaterCycles:  webui.Chart{Title: "Water per wash cycle (L)", Unit: " L"},
		EnergyCycles: webui.Chart{Title: "Energy per wash cycle (kWh)", Unit: " kWh"},
		DryingCycles: webui.Chart{Title: "Mean drying temperature per wash cycle (°C)", Unit: "°"},
		WaterWeeks:   webui.Chart{Title: "Water per week (L)", Unit: " L"},
		EnergyWeeks:  webui.Chart{Title: "Energy per week (kWh)", Unit: " kWh"},
		Cycles:       len(ends),
	}
	// Per week: the last usageWeeks weeks, Monday to Sunday (UTC), oldest first.
	monday := func(t time.Time) time.Time {
		d := t.UTC().Truncate(24 * time.Hour)
		return d.AddDate(0, 0, -((int(d.Weekday()) + 6) % 7))
	}
	first := monday(now).AddDate(0, 0, -7*(usageWeeks-1))
	water, energy := make([]float64, usageWeeks), make([]float64, usageWeeks)
	for _, e := range ends {
		if i := int(monday(e.Time).Sub(first) / (7 * 24 * time.Hour)); i >= 0 && i < usageWeeks {
			water[i] += e.Readings[readingWater].Value
			energy[i] += e.Readings[readingEnergy].Value
		}
	}
	for i := range usageWeeks {
		label := first.AddDate(0, 0, 7*i).Format("01-02")
		v.WaterWeeks.Points = append(v.WaterWeeks.Points, webui.Point{Label: label, Value: water[i]})
		v.EnergyWeeks.Points = append(v.EnergyWeeks.Points, webui.Point{Label: label, Value: energy[i]})
	}
	// Per cycle: the last MaxChartCycles.
	ends = ends[max(0, len(ends)-MaxChartCycles):]
	for _, e := range ends {
		label := e.Time.UTC().Format("01-02 15:04")
		v.WaterCycles.Points = append(v.WaterCycles.Points, webui.Point{Label: label, Value: e.Readings[readingWater].Value})
		v.EnergyCycles.Points = append(v.EnergyCycles.Points, webui.Point{Label: label, Value: e.Readings[readingEnergy].Value})
	}
	// Drying temperature: the cycle summaries since the first charted cycle began (a
	// cycle's summaries end before its cycle_end), never before the claim.
	dryFrom := from
	if len(ends) > 0 {
		if t := ends[0].Time.Add(-6 * time.Hour); t.After(from) {
			dryFrom = t
		}
	}
	sums, err := p.cfg.Store.CycleSummaries(ctx, a.Device, dryFrom, 1000)
	if err != nil {
		return usageView{}, err
	}
	var dry []webui.Point
	for _, s := range sums {
		if s.Phase == phaseDrying && s.Metric == metricDrying && !s.First.Before(a.Since) {
			dry = append(dry, webui.Point{Label: s.Last.UTC().Format("01-02 15:04"), Value: s.Avg()})
		}
	}
	v.DryingCycles.Points = dry[max(0, len(dry)-MaxChartCycles):]
	return v, nil
}

// cycleEnds returns device's cycle_end events from from on, oldest first, reading at most
// maxEventPages pages.
func (p *Portal) cycleEnds(ctx context.Context, device string, from time.Time) ([]cloudstore.StoredEvent, error) {
	var out []cloudstore.StoredEvent
	var after *cloudstore.StoredEvent
	for range maxEventPages {
		evs, err := p.cfg.Store.Events(ctx, device, from, time.Time{}, after, 1000)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if e.Name == eventCycleEnd {
				out = append(out, e)
			}
		}
		if len(evs) < 1000 {
			break
		}
		after = &evs[len(evs)-1]
	}
	return out, nil
}
