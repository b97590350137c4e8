"""An SMTP server for the e-mail tests: aiosmtpd (Debian's python3-aiosmtpd) on 127.0.0.1 with
STARTTLS required and AUTH (LOGIN, PLAIN) required over TLS, delivering into a maildir. aiosmtpd's
command line does STARTTLS but takes no authenticator; this adds one that takes one user."""

import argparse
import signal
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--maildir", required=True)
p.add_argument("--tlscert", required=True)
p.add_argument("--tlskey", required=True)
p.add_argument("--user", required=True)
p.add_argument("--password", required=True)
a = p.parse_args()

tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
tls.load_cert_chain(a.tlscert, a.tlskey)


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == a.user.encode()
          and auth_data.password == a.password.encode())
    return AuthResult(success=ok, handled=False)


c = Controller(Mailbox(a.maildir), hostname="127.0.0.1", port=a.port, tls_context=tls, require_starttls=True,
               authenticator=authenticate, auth_required=True, auth_require_tls=True)
c.start()
print("ready", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
stop.wait()
c.stop()
