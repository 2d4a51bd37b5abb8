package portal

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/moat-iot/moat/internal/cloud/owners"
	"github.com/moat-iot/moat/internal/webui"
)

// refusal maps an expected refusal to its status, a message fit to show and the time to
// wait; ok is false for an unexpected error (logged, never shown).
func refusal(err error) (status int, msg string, retry time.Duration, ok bool) {
	switch {
	case errors.Is(err, owners.ErrInvalid):
		// The store's and the owners' checks name the field; the sentinel's own words
		// add nothing for an owner.
		return http.StatusBadRequest, strings.ReplaceAll(err.Error(), owners.ErrInvalid.Error()+": ", ""), 0, true
	case errors.Is(err, owners.ErrBadCredentials):
		return http.StatusUnauthorized, err.Error(), 0, true
	case errors.Is(err, owners.ErrUnverified):
		return http.StatusForbidden, err.Error(), 0, true
	case errors.Is(err, owners.ErrLocked), errors.Is(err, owners.ErrThrottled):
		return http.StatusTooManyRequests, err.Error(), owners.RetryAfter(err), true
	case errors.Is(err, owners.ErrBusy):
		return http.StatusServiceUnavailable, err.Error(), 2 * time.Second, true
	case errors.Is(err, owners.ErrBadCode):
		return http.StatusBadRequest, err.Error(), 0, true
	case errors.Is(err, owners.ErrTooManyAppliances):
		return http.StatusConflict, err.Error(), 0, true
	case errors.Is(err, owners.ErrNotFound):
		return http.StatusNotFound, "There is no such page.", 0, true
	}
	return 0, "", 0, false
}

// refuse re-renders page name with err's message, or returns err when it is unexpected.
func (p *Portal) refuse(q *req, name string, v view, err error) error {
	status, msg, retry, ok := refusal(err)
	if !ok {
		return err
	}
	v.Error, v.RetryAfter = msg, retry
	return p.page(q, status, name, v)
}

func (p *Portal) home(q *req) error {
	if q.owner != nil {
		http.Redirect(q.w, q.r, "/portal/appliances", http.StatusSeeOther)
	} else {
		http.Redirect(q.w, q.r, "/portal/sign-in", http.StatusSeeOther)
	}
	return nil
}

type accountForm struct {
	Email, Name string
	Unverified  bool
}

func (p *Portal) signUpForm(q *req) error {
	return p.page(q, http.StatusOK, "signup.html", view{Title: "Create an account", Data: accountForm{}})
}

func (p *Portal) signUp(q *req) error {
	f := q.r.PostForm
	form := accountForm{Email: f.Get("email"), Name: f.Get("name")}
	v := view{Title: "Create an account", Data: form}
	if f.Get("password") != f.Get("password2") {
		v.Error = "The two passwords differ."
		return p.page(q, http.StatusBadRequest, "signup.html", v)
	}
	if err := p.cfg.Owners.SignUp(q.r.Context(), form.Email, form.Name, f.Get("password"), q.r.RemoteAddr); err != nil {
		return p.refuse(q, "signup.html", v, err)
	}
	// The same answer whether or not the address had an account (owners.SignUp).
	return p.page(q, http.StatusOK, "message.html", view{Title: "Check your mail",
		Data: "We have sent a link to " + form.Email + ". Open it within 48 hours to verify your address, then sign in."})
}

func (p *Portal) verify(q *req) error {
	if _, err := p.cfg.Owners.Verify(q.r.Context(), q.r.URL.Query().Get("token")); err != nil {
		if errors.Is(err, owners.ErrNotFound) {
			return p.page(q, http.StatusNotFound, "message.html", view{Title: "Link not valid",
				Data: "This verification link is not valid, was used already or has expired. Sign in, or ask for a new link."})
		}
		return err
	}
	return p.page(q, http.StatusOK, "message.html", view{Title: "Address verified", Notice: "verified",
		Data: "Your email address is verified. You can sign in now."})
}

func (p *Portal) resendForm(q *req) error {
	return p.page(q, http.StatusOK, "resend.html", view{Title: "Send the link again", Data: accountForm{Email: q.r.URL.Query().Get("email")}})
}

func (p *Portal) resend(q *req) error {
	form := accountForm{Email: q.r.PostForm.Get("email")}
	if err := p.cfg.Owners.ResendVerification(q.r.Context(), form.Email, q.r.RemoteAddr); err != nil {
		return p.refuse(q, "resend.html", view{Title: "Send the link again", Data: form}, err)
	}
	return p.page(q, http.StatusOK, "message.html", view{Title: "Check your mail",
		Data: "If " + form.Email + " has an account that is not verified yet, we have sent it a new link."})
}

func (p *Portal) signInForm(q *req) error {
	if q.owner != nil {
		http.Redirect(q.w, q.r, "/portal/appliances", http.StatusSeeOther)
		return nil
	}
	return p.page(q, http.StatusOK, "signin.html", view{Title: "Sign in", Data: accountForm{}})
}

func (p *Portal) signIn(q *req) error {
	form := accountForm{Email: q.r.PostForm.Get("email")}
	o, err := p.cfg.Owners.SignIn(q.r.Context(), form.Email, q.r.PostForm.Get("password"), q.r.RemoteAddr)
	if err != nil {
		form.Unverified = errors.Is(err, owners.ErrUnverified)
		return p.refuse(q, "signin.html", view{Title: "Sign in", Data: form}, err)
	}
	// A new session ID at every sign-in: an ID planted before it is worth nothing.
	id, err := p.cfg.Owners.NewSession(q.r.Context(), o.ID)
	if err != nil {
		return err
	}
	webui.SetCookie(q.w, SessionCookie, id, p.cfg.Now().Add(owners.SessionLifetime))
	http.Redirect(q.w, q.r, "/portal/appliances", http.StatusSeeOther)
	return nil
}

func (p *Portal) signOut(q *req) error {
	if err := p.cfg.Owners.EndSession(q.r.Context(), q.sid); err != nil {
		return err
	}
	webui.ClearCookie(q.w, SessionCookie)
	http.Redirect(q.w, q.r, "/portal/sign-in", http.StatusSeeOther)
	return nil
}
