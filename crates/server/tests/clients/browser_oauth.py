"""A real browser (Playwright driving Debian's Chromium) through the authorization endpoint's pages.

Driven by tests/api/browser.rs. argv[1] is a JSON object:

  chromium      path of the Chromium binary (never a Playwright download)
  axe_script    path of axe-core's axe.min.js
  screenshots   folder for one screenshot per page shown
  password      every user's password
  untick        the scope the user unticks on the consent page
  callback      the redirect URI's prefix (a loopback receiver the test serves)
  flows         {variant: {"url": authorization URL, "email": the user who signs in}} for the
                variants "pointer", "keyboard", "no_js"
  axe           {"url": an authorization URL whose pages axe-core checks (nothing is approved
                there), "email": its user}
  error_url     an authorization URL the server must refuse on its error page

Prints one JSON object of what the browser saw (pages' headers, cookies, console messages, where
each flow ended, axe-core's violations); tests/api/browser.rs asserts on it. Any step that cannot
be done (an element missing, a page that never comes) raises, and the process exits non-zero.
The browser reaches loopback only: `*.localhost` maps to 127.0.0.1 and every other name fails to
resolve; no proxy is used.
"""

import json
import os
import sys

from playwright.sync_api import sync_playwright

# Generous: CI runs the whole suite at once on two cores (a healthy run takes ~13 s in all).
TIMEOUT_MS = 30_000
TAB_LIMIT = 12

args = json.loads(sys.argv[1])
os.makedirs(args["screenshots"], exist_ok=True)


def shot(page, name):
    page.screenshot(path=os.path.join(args["screenshots"], f"{name}.png"), full_page=True)


def watch(page, log):
    """Records the console, page errors, and every document response's headers."""
    page.on("console", lambda m: log["console"].append({"type": m.type, "text": m.text}))
    page.on("pageerror", lambda e: log["console"].append({"type": "pageerror", "text": str(e)}))

    def on_response(response):
        if response.request.resource_type != "document":
            return
        headers = response.all_headers()
        log["documents"].append(
            {
                "url": response.url,
                "status": response.status,
                "method": response.request.method,
                "content-security-policy": headers.get("content-security-policy"),
                "x-frame-options": headers.get("x-frame-options"),
                "set-cookie": response.header_values("set-cookie"),
            }
        )

    page.on("response", on_response)


def new_log():
    return {"console": [], "documents": [], "cookies": [], "ended_at": None, "notes": {}}


def focused(page):
    """The focused element: tag, type, name, value, text, and its outline (focus visibility)."""
    return page.evaluate(
        """() => {
            const e = document.activeElement;
            if (!e) return null;
            const style = getComputedStyle(e);
            return {tag: e.tagName.toLowerCase(), type: e.getAttribute('type'),
                    name: e.getAttribute('name'), value: e.getAttribute('value'),
                    text: (e.textContent || '').trim(), outline: style.outlineStyle};
        }"""
    )


def tab_to(page, wanted, log, what):
    """Presses Tab until the focused element matches `wanted`; records what it passed."""
    for _ in range(TAB_LIMIT):
        page.keyboard.press("Tab")
        element = focused(page)
        log["notes"].setdefault("focus_path", []).append(element)
        if element and all(element.get(k) == v for k, v in wanted.items()):
            return element
    raise AssertionError(f"Tab never reached {what}")


def pointer_flow(context, flow, log, prefix):
    page = context.new_page()
    watch(page, log)
    page.goto(flow["url"])
    shot(page, f"{prefix}-login")
    page.get_by_label("Email").fill(flow["email"])
    page.get_by_label("Password").fill(args["password"])
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", level=1).wait_for()
    shot(page, f"{prefix}-consent")
    box = page.locator(f'input[type=checkbox][value="{args["untick"]}"]')
    box.uncheck()
    if box.is_checked():
        raise AssertionError("the scope stayed ticked")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(args["callback"] + "**", timeout=TIMEOUT_MS)
    log["ended_at"] = page.url
    log["cookies"] = context.cookies()
    page.close()


def keyboard_flow(context, flow, log):
    """Login and consent with Tab, Space and Enter only (and typing into the fields)."""
    page = context.new_page()
    watch(page, log)
    page.goto(flow["url"])
    tab_to(page, {"name": "email"}, log, "the email field")
    page.keyboard.type(flow["email"])
    tab_to(page, {"name": "password"}, log, "the password field")
    page.keyboard.type(args["password"])
    button = tab_to(page, {"tag": "button", "text": "Sign in"}, log, "the Sign in button")
    log["notes"]["sign_in_outline"] = button["outline"]
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.get_by_role("heading", level=1).wait_for()
    box = tab_to(page, {"name": "grant", "value": args["untick"]}, log, "the scope to untick")
    log["notes"]["checkbox_outline"] = box["outline"]
    page.keyboard.press("Space")
    if page.locator(f'input[type=checkbox][value="{args["untick"]}"]').is_checked():
        raise AssertionError("Space did not untick the scope")
    allow = tab_to(page, {"tag": "button", "value": "allow"}, log, "the Allow button")
    log["notes"]["allow_outline"] = allow["outline"]
    page.keyboard.press("Enter")
    page.wait_for_url(args["callback"] + "**", timeout=TIMEOUT_MS)
    log["ended_at"] = page.url
    log["cookies"] = context.cookies()
    page.close()


def wait_for(page, condition):
    """Lets the page run until `condition()` holds, or the time limit passes (the caller's
    assertions then report what was missing)."""
    for _ in range(TIMEOUT_MS // 100):
        if condition():
            return
        page.wait_for_timeout(100)


def framing(context, url):
    """Whether a page of another origin can show the login page in a frame."""
    page = context.new_page()
    console = []
    page.on("console", lambda m: console.append(m.text))
    page.set_content(f'<iframe src="{url}" title="login"></iframe>', wait_until="load")
    wait_for(page, lambda: any("frame-ancestors" in text for text in console))
    frame = next((f for f in page.frames if f != page.main_frame), None)
    shown = False
    if frame is not None:
        try:
            shown = frame.locator("#email").count() > 0
        except Exception:  # a blocked frame is an error page of another process
            shown = False
    page.close()
    return {"login_form_shown": shown, "console": console}


def csp_canary(context, url):
    """Proves the console watch sees a violation: an inline style added to a page is refused."""
    page = context.new_page()
    log = new_log()
    watch(page, log)
    page.goto(url)
    page.evaluate(
        """() => { const s = document.createElement('style');
                   s.textContent = 'body { color: red }'; document.head.appendChild(s); }"""
    )
    wait_for(page, lambda: log["console"])
    page.close()
    return log["console"]


def axe(page):
    page.add_script_tag(path=args["axe_script"])
    return page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ['violations']});
            return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.map(n => n.target.join(' '))}));
        }"""
    )


def axe_pages(context):
    """axe-core on the login, consent and error pages (this context bypasses the CSP to inject it)."""
    page = context.new_page()
    page.goto(args["axe"]["url"])
    found = {"login": axe(page)}
    page.get_by_label("Email").fill(args["axe"]["email"])
    page.get_by_label("Password").fill(args["password"])
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", level=1).wait_for()
    found["consent"] = axe(page)
    page.goto(args["error_url"])
    shot(page, "error")
    found["error"] = axe(page)
    # A canary: axe-core does report what it must (an image without a text alternative).
    page.set_content('<!DOCTYPE html><html lang="en"><title>canary</title><main><img src="x.png"></main>')
    found["canary"] = axe(page)
    page.close()
    return found


with sync_playwright() as playwright:
    browser = playwright.chromium.launch(
        executable_path=args["chromium"],
        headless=True,
        args=[
            # As root, Chromium's sandbox cannot start; the pages are the test's own.
            "--no-sandbox",
            "--no-proxy-server",
            # Nothing but the test's traffic: this network is closed, and Chromium's background
            # connections would only be refused (slowly).
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--disable-gpu",
            "--no-first-run",
            "--host-resolver-rules=MAP *.localhost 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ],
    )
    report = {"browser": browser.version, "flows": {}}

    def context(**options):
        made = browser.new_context(**options)
        made.set_default_timeout(TIMEOUT_MS)
        return made

    log = new_log()
    pointer_flow(context(), args["flows"]["pointer"], log, "pointer")
    report["flows"]["pointer"] = log

    log = new_log()
    keyboard_flow(context(), args["flows"]["keyboard"], log)
    report["flows"]["keyboard"] = log

    log = new_log()
    pointer_flow(context(java_script_enabled=False), args["flows"]["no_js"], log, "no-js")
    report["flows"]["no_js"] = log

    checks = context()
    report["framing"] = framing(checks, args["axe"]["url"])
    report["csp_canary"] = csp_canary(checks, args["axe"]["url"])
    report["axe"] = axe_pages(context(bypass_csp=True))
    browser.close()

print(json.dumps(report), flush=True)
