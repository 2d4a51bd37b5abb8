package portal

import (
	"errors"
	"net/http"

	"github.com/moat-iot/moat/internal/cloud/owners"
	"github.com/moat-iot/moat/internal/webui"
)

// Password reset pages: /portal/reset asks for a link, /portal/reset/confirm sets the new
// password with it. The token comes in the link's query and goes back in a hidden form
// field; Referrer-Policy: no-referrer (webui.Headers) keeps it out of other sites' logs
// and the access log names the path only (TestPortal_AccessLogHoldsNoSecrets).

type resetForm struct {
	Email string
	Token string
}

func (p *Portal) resetForm(q *req) error {
	return p.page(q, http.StatusOK, "reset.html", view{Title: "Forgot your password?", Data: resetForm{}})
}

func (p *Portal) reset(q *req) error {
	form := resetForm{Email: q.r.PostForm.Get("email")}
	if err := p.cfg.Owners.RequestReset(q.r.Context(), form.Email, q.r.RemoteAddr); err != nil {
		return p.refuse(q, "reset.html", view{Title: "Forgot your password?", Data: form}, err)
	}
	// The same answer whether or not the address has an account (owners.RequestReset).
	return p.page(q, http.StatusOK, "message.html", view{Title: "Check your mail",
		Data: "If " + form.Email + " has an account, we have sent it a link to choose a new password. It works for an hour."})
}

// badResetLink answers a reset link that is unknown, used or expired.
func (p *Portal) badResetLink(q *req) error {
	return p.page(q, http.StatusNotFound, "message.html", view{Title: "Link not valid", Data: owners.ErrResetLink.Error()})
}

func (p *Portal) resetConfirmForm(q *req) error {
	token := q.r.URL.Query().Get("token")
	if err := p.cfg.Owners.CheckResetLink(q.r.Context(), token); err != nil {
		if errors.Is(err, owners.ErrResetLink) {
			return p.badResetLink(q)
		}
		return err
	}
	return p.page(q, http.StatusOK, "reset_confirm.html", view{Title: "Choose a new password", Data: resetForm{Token: token}})
}

func (p *Portal) resetConfirm(q *req) error {
	f := q.r.PostForm
	v := view{Title: "Choose a new password", Data: resetForm{Token: f.Get("token")}}
	if f.Get("password") != f.Get("password2") {
		v.Error = "The two passwords differ."
		return p.page(q, http.StatusBadRequest, "reset_confirm.html", v)
	}
	err := p.cfg.Owners.ResetPassword(q.r.Context(), f.Get("token"), f.Get("password"))
	if errors.Is(err, owners.ErrResetLink) {
		return p.badResetLink(q)
	}
	if err != nil {
		return p.refuse(q, "reset_confirm.html", v, err)
	}
	// Every session of the owner ended with the reset; this browser starts afresh too.
	if q.owner != nil {
		q.owner, q.csrf = nil, ""
		webui.ClearCookie(q.w, SessionCookie)
	}
	return p.page(q, http.StatusOK, "message.html", view{Title: "Password changed", Notice: "Your password is changed.",
		Data: "You are signed out everywhere. Sign in with your new password."})
}
