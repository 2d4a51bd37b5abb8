package rules

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Product settings: what a rule file declares besides its rules, for the actions that
// reach past the cloud (issue 14): the warranty period, the consumables an owner may be
// prompted to buy and the spare parts a repair shop may be asked to reserve.

// Names of the actions that reach past the cloud; internal/cloud/actions performs them.
const (
	ActionDiagnostics    = "diagnostics"
	ActionNotify         = "notify"
	ActionServiceRequest = "service-request"
	ActionReservePart    = "reserve-part"
	ActionPrompt         = "prompt"
)

// Limits of the product settings.
const (
	// MaxWarranty bounds warranty.
	MaxWarranty = 30 * 365 * 24 * time.Hour
	// MaxConsumables and MaxParts bound the declarations of one file.
	MaxConsumables = 32
	MaxParts       = 64
	// MaxBuyURLBytes bounds a consumable's buy_url (the store keeps 512 bytes).
	MaxBuyURLBytes = 512
	// MaxServiceRequestBytes bounds a service-request action's description.
	MaxServiceRequestBytes = 200
	// Day and Year are the warranty syntax's units: a year counts 365 days.
	Day  = 24 * time.Hour
	Year = 365 * Day
)

// Settings are a product's settings in its rule file.
type Settings struct {
	// Warranty is the warranty period from the sale; 0: none declared (every appliance
	// is out of warranty).
	Warranty time.Duration
	// Consumables by name ("rinse-agent").
	Consumables map[string]Consumable
	// Parts by part number.
	Parts map[string]Part
}

// Consumable is something an owner refills.
type Consumable struct {
	Name string
	// BuyURL is where to buy it: an absolute https URL.
	BuyURL string
	Line   int
}

// Part is a spare part a repair shop may hold.
type Part struct {
	Number      string
	Description string
	Line        int
}

var (
	// itemRE is the syntax of part numbers and consumable names, as cloudstore stores them.
	itemRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	warrantyRE = regexp.MustCompile(`^([1-9][0-9]{0,4})([dwy])$`)
)

// ParseWarranty reads a warranty period: a whole number and one unit, d (days), w (weeks)
// or y (years of 365 days): "730d", "104w", "2y". Calendar arithmetic (months, leap
// days) is left out on purpose: the period is a plain duration from the sale.
func ParseWarranty(s string) (time.Duration, error) {
	m := warrantyRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("warranty %q must be a whole number and a unit d, w or y, such as 2y or 730d", s)
	}
	n, _ := strconv.Atoi(m[1]) // at most 5 digits
	unit := map[string]time.Duration{"d": Day, "w": 7 * Day, "y": Year}[m[2]]
	d := time.Duration(n) * unit
	if d > MaxWarranty {
		return 0, fmt.Errorf("warranty %q is longer than 30y", s)
	}
	return d, nil
}

// CheckNotify checks the argument of the notify action: the recipient, "owner" (the
// appliance's verified owner, by mail).
func CheckNotify(arg string) error {
	if arg != "owner" {
		return fmt.Errorf("notify %q: the recipient must be owner", arg)
	}
	return nil
}

// CheckServiceRequest checks the argument of the service-request action: the request's
// description, one line of at most MaxServiceRequestBytes.
func CheckServiceRequest(arg string) error {
	if strings.TrimSpace(arg) == "" || len(arg) > MaxServiceRequestBytes {
		return fmt.Errorf("description must be 1 to %d bytes", MaxServiceRequestBytes)
	}
	for _, r := range arg {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return fmt.Errorf("description must be one line of printable text")
		}
	}
	return nil
}

// checkItem checks the syntax of a reserve-part or prompt argument; that it is declared
// under parts: or consumables: is checked once the whole file is read (checkDeclared).
func checkItem(arg string) error {
	if !itemRE.MatchString(arg) {
		return fmt.Errorf("%q must be 1 to 64 letters, digits, '_', '.' or '-'", arg)
	}
	return nil
}

// actionRef is an action with an argument that names a declaration of the file.
type actionRef struct {
	line            int
	what, name, arg string
}

// checkDeclared is Parse's second pass: an argument of reserve-part must be a part
// declared under parts: (and the file must declare a warranty, which is what a
// reservation checks), one of prompt a consumable declared under consumables:. It runs
// after the whole file is read, since the declarations may follow the rules.
func (p *parser) checkDeclared(f *File) {
	for _, r := range p.refs {
		switch r.name {
		case ActionReservePart:
			if _, ok := f.Parts[r.arg]; !ok {
				p.errf(r.line, "%s: action %s: part %q is not declared under parts:", r.what, r.name, r.arg)
			} else if f.Warranty == 0 {
				p.errf(r.line, "%s: action %s: the file declares no warranty:", r.what, r.name)
			}
		case ActionPrompt:
			if _, ok := f.Consumables[r.arg]; !ok {
				p.errf(r.line, "%s: action %s: consumable %q is not declared under consumables:", r.what, r.name, r.arg)
			}
		}
	}
}

func (p *parser) settings(fields map[string]*yaml.Node, f *File) {
	if n := fields["warranty"]; n != nil {
		if s, ok := p.str(n, "warranty"); ok {
			d, err := ParseWarranty(s)
			if err != nil {
				p.errf(n.Line, "%v", err)
			}
			f.Warranty = d
		}
	}
	if n := fields["consumables"]; n != nil {
		f.Consumables = p.consumables(n)
	}
	if n := fields["parts"]; n != nil {
		f.Parts = p.parts(n)
	}
}

// items walks a mapping of name to fields, checking each name's syntax, uniqueness and
// the count; fn reads one item's fields.
func (p *parser) items(n *yaml.Node, what, example string, max int, fn func(name string, line int, v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, "%s must be a mapping such as %s", what, example)
		return
	}
	if len(n.Content)/2 > max {
		p.errf(n.Line, "%s declares %d, more than %d", what, len(n.Content)/2, max)
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode || !itemRE.MatchString(k.Value):
			p.errf(k.Line, "%s: name %q must be 1 to 64 letters, digits, '_', '.' or '-'", what, k.Value)
		case seen[k.Value]:
			p.errf(k.Line, "%s: duplicate %q", what, k.Value)
		default:
			seen[k.Value] = true
			fn(k.Value, k.Line, v)
		}
	}
}

func (p *parser) consumables(n *yaml.Node) map[string]Consumable {
	out := map[string]Consumable{}
	p.items(n, "consumables", "{rinse-agent: {buy_url: https://...}}", MaxConsumables, func(name string, line int, v *yaml.Node) {
		what := "consumable " + name
		fields := p.mapping(v, what, map[string]bool{"buy_url": true}, []string{"buy_url"})
		if fields == nil || fields["buy_url"] == nil {
			return
		}
		u := fields["buy_url"]
		s, ok := p.str(u, what+": buy_url")
		if !ok {
			return
		}
		if err := checkBuyURL(s); err != nil {
			p.errf(u.Line, "%s: buy_url: %v", what, err)
			return
		}
		out[name] = Consumable{Name: name, BuyURL: s, Line: line}
	})
	return out
}

// checkBuyURL accepts an absolute https URL with a host, no user information and no
// control characters: it is mailed to owners and shown as a link in the portal.
func checkBuyURL(s string) error {
	if len(s) > MaxBuyURLBytes {
		return fmt.Errorf("at most %d bytes", MaxBuyURLBytes)
	}
	for _, r := range s {
		if r <= 0x20 || r == 0x7f {
			return fmt.Errorf("%q holds spaces or control characters", s)
		}
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Opaque != "" {
		return fmt.Errorf("%q must be an absolute https URL without user information", s)
	}
	return nil
}

func (p *parser) parts(n *yaml.Node) map[string]Part {
	out := map[string]Part{}
	p.items(n, "parts", "{HT-100: {description: heater}}", MaxParts, func(name string, line int, v *yaml.Node) {
		what := "part " + name
		fields := p.mapping(v, what, map[string]bool{"description": true}, []string{"description"})
		if fields == nil || fields["description"] == nil {
			return
		}
		d, ok := p.text(fields["description"], what+": description")
		if !ok {
			return
		}
		out[name] = Part{Number: name, Description: d, Line: line}
	})
	return out
}
