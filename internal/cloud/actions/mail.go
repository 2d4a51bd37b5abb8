package actions

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/moat-iot/moat/internal/cloud/cloudstore"
	"github.com/moat-iot/moat/internal/cloud/outbox"
	"github.com/moat-iot/moat/internal/cloud/rules"
)

// The mails are plain text: nothing a device or an owner wrote can become markup. What
// an owner wrote (their name, the nickname) and what a rule says are put on lines of
// their own, without control characters, so none can forge a header or a link.

// applianceURL is the portal page of device.
func (h handlers) applianceURL(device string) string {
	return strings.TrimSuffix(h.PortalURL, "/") + "/appliances/" + url.PathEscape(device)
}

func applianceName(info cloudstore.ApplianceInfo, product string) string {
	if info.Nickname != "" && info.Nickname != product { // a claimed appliance is named after its product until renamed
		return fmt.Sprintf("%s %q", product, oneLine(info.Nickname, 60))
	}
	return product
}

func greeting(info cloudstore.ApplianceInfo) string {
	if info.OwnerName == "" {
		return "Hello,"
	}
	return "Hello " + oneLine(info.OwnerName, 100) + ","
}

// alertMail renders the notify mail of an alert.
func (h handlers) alertMail(info cloudstore.ApplianceInfo, p Payload) outbox.Mail {
	name := applianceName(info, p.Product)
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", greeting(info))
	fmt.Fprintf(&b, "Your %s (device %s) needs attention. On %s moat found:\n\n", name, shortDevice(p.Device), p.OpenedAt.UTC().Format("2 January 2006 at 15:04 MST"))
	fmt.Fprintf(&b, "    %s\n\n", oneLine(p.Message, maxMessageBytes))
	fmt.Fprintf(&b, "See what was found and what is being done about it (diagnostics, a service\nrequest, a part reserved at your repair shop) in your portal:\n\n    %s\n\n", h.applianceURL(p.Device))
	b.WriteString("You receive this mail because you own this appliance and verified this address.\n")
	return outbox.Mail{To: info.OwnerEmail, Subject: oneLine(fmt.Sprintf("Your %s needs attention (%s)", name, p.Rule), 200), Text: b.String()}
}

// promptMail renders the purchase prompt mail of a consumable.
func (h handlers) promptMail(info cloudstore.ApplianceInfo, p Payload, c rules.Consumable) outbox.EmailPayload {
	name := applianceName(info, p.Product)
	label := strings.ReplaceAll(c.Name, "-", " ")
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", greeting(info))
	fmt.Fprintf(&b, "Your %s (device %s) is running low on %s (%s).\n\n", name, shortDevice(p.Device), label, oneLine(p.Message, maxMessageBytes))
	fmt.Fprintf(&b, "You can buy more here:\n\n    %s\n\n", c.BuyURL)
	fmt.Fprintf(&b, "Your portal shows the level: %s\n\n", h.applianceURL(p.Device))
	b.WriteString("We send this once each time it runs low, until it is refilled.\n")
	return outbox.EmailPayload{To: info.OwnerEmail, Subject: oneLine(fmt.Sprintf("Your %s needs %s", name, label), 200), Text: b.String()}
}
