# fail2ban action: bans and unbans through hbf, over the API socket of its
# daemon, inside fail2ban's own process. A command per ban (hbf block) costs
# the start of a process, ~15 ms here; this costs a request.
#
# In a jail (docs/fail2ban.md):
#
#   action = hbf.py[socket="/run/hbf/hbf.sock", fleet="false"]
#
# Bans are blocks of origin fail2ban:<jail>: an unban ends that jail's block
# alone, never one the scan detector, an operator or another jail made of
# the same address. hbf keeps its blocks across its own restarts and
# fail2ban's: stopping or flushing the jail leaves them in force, and a
# restarted fail2ban does not ban again what it restores from its database.
import http.client
import json
import socket

from fail2ban.server.actions import ActionBase


class _UnixHTTPConnection(http.client.HTTPConnection):
	def __init__(self, path, timeout):
		super().__init__("hbf", timeout=timeout)
		self._path = path

	def connect(self):
		s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
		s.settimeout(self.timeout)
		s.connect(self._path)
		self.sock = s


class HBFAction(ActionBase):
	# hbf already holds what fail2ban restores: nothing to ban again.
	norestored = True

	def __init__(self, jail, name, socket="/run/hbf/hbf.sock", fleet="false", timeout="10"):
		super().__init__(jail, name)
		self.socket = socket
		self.fleet = str(fleet).lower() in ("1", "true", "yes", "on")
		self.timeout = float(timeout)
		self.origin = "fail2ban:" + jail.name

	def _change(self, verb, req):
		conn = _UnixHTTPConnection(self.socket, self.timeout)
		try:
			conn.request("POST", "/v1/" + verb, json.dumps(req), {"Content-Type": "application/json"})
			resp = conn.getresponse()
			body = resp.read()
			if resp.status != 200:
				raise RuntimeError("hbf %s: HTTP %d: %s" % (verb, resp.status, body.decode(errors="replace").strip()))
			return json.loads(body)
		finally:
			conn.close()

	def start(self):
		pass  # hbf keeps its blocks: nothing to set up

	def stop(self):
		pass  # the jail's blocks stay in force in hbf

	def flush(self):
		# Without it, fail2ban unbans every ticket one by one when the jail
		# stops. The blocks stay: hbf persists them, and they expire there.
		return True

	def ban(self, aInfo):
		req = {"targets": [str(aInfo["ip"])], "origin": self.origin, "fleet": self.fleet,
		       "reason": "fail2ban %s: %d failures" % (self._jail.name, int(aInfo["failures"] or 0))}
		bantime = int(aInfo["bantime"] or 0)
		if bantime > 0:  # -1: for good, as hbf's 0
			req["for"] = bantime * 1000000000
		for r in self._change("block", req):
			if not r.get("ok"):
				# A refusal (a protected address) is said, never a failed
				# action: fail2ban would check and restart the action.
				self._logSys.warning("hbf refused to ban %s: %s", r.get("target"), r.get("error"))

	def unban(self, aInfo):
		for r in self._change("unblock", {"targets": [str(aInfo["ip"])], "origin": self.origin}):
			if not r.get("ok"):
				self._logSys.info("hbf: %s", r.get("error"))


Action = HBFAction
