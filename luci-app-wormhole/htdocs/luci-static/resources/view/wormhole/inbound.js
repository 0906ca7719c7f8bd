'use strict';
'require view';
'require dom';
'require poll';
'require rpc';
'require ui';

/*
 * Network → Inbound Services: exemptions (replies leave by the uplink their connection
 * came in by) and forwards (redirects), over the `wormhole` ubus object.
 *
 * Rules this file keeps:
 *  - every string that comes from the router (labels, names, error messages, findings)
 *    reaches the DOM as a text node: always inside an array child of E(), never as a
 *    bare string child (LuCI treats that as markup) and never through innerHTML;
 *  - validation lives in the backend: its {error: {code, field, message}} is shown as
 *    it is, next to the field it names;
 *  - live refresh updates rows and cells in place and never touches the add forms, so
 *    nothing flickers and nothing typed is lost;
 *  - controls that write exist only when the session may call the write methods.
 */

var ENTRY_OPTIONS = [
	'proto', 'port', 'label', 'interface', 'family', 'open', 'enabled',
	'src', 'src_dport', 'src_dip', 'src_ip', 'dest_ip', 'dest_port', 'snat', 'mss', 'reply', 'reflection'
];

var callStatus = rpc.declare({ object: 'wormhole', method: 'status', expect: { '': {} } });
var callList = rpc.declare({ object: 'wormhole', method: 'list', expect: { '': {} } });
var callCheck = rpc.declare({ object: 'wormhole', method: 'check', expect: { '': {} } });
var callAdd = rpc.declare({ object: 'wormhole', method: 'add',
	params: [ 'type' ].concat(ENTRY_OPTIONS), reject: true });
var callUpdate = rpc.declare({ object: 'wormhole', method: 'update',
	params: [ 'id' ].concat(ENTRY_OPTIONS), reject: true });
var callDel = rpc.declare({ object: 'wormhole', method: 'del', params: [ 'id' ], reject: true });
var callAccess = rpc.declare({ object: 'session', method: 'access',
	params: [ 'scope', 'object', 'function' ], expect: { access: false } });

var CHECK_EVERY = 6;	/* polls between two runs of the (heavier) `check` method */

var PROTOS = [ [ 'tcp', 'TCP' ], [ 'udp', 'UDP' ], [ 'tcpudp', 'TCP+UDP' ] ];

var STATES = {
	active:   { dot: true,  color: '#2e7d32', text: function() { return _('Active') } },
	inert:    { dot: true,  color: '#b26a00', text: function() { return _('Inert') } },
	pending:  { dot: true,  color: '#1565c0', text: function() { return _('Applying…') } },
	error:    { dot: true,  color: '#c62828', text: function() { return _('Error') } },
	disabled: { dot: false, color: '#757575', text: function() { return _('Disabled') } }
};

/* --- small helpers ------------------------------------------------------------------- */

function protoName(p) {
	for (var i = 0; i < PROTOS.length; i++)
		if (PROTOS[i][0] == p)
			return PROTOS[i][1];
	return String(p == null ? '—' : p);
}

function isObject(v) {
	return v != null && typeof v == 'object';
}

function toArray(v) {
	return v == null ? [] : (Array.isArray(v) ? v : String(v).split(/\s+/).filter(Boolean));
}

/* `enabled` is a boolean for valid entries, raw UCI text for the ones the backend skipped. */
function isEnabled(e) {
	return [ false, 0, '0', 'no', 'off', 'false', 'disabled' ].indexOf(e.enabled) < 0;
}

function argsOf(names, obj) {
	return names.map(function(n) { return obj[n] });
}

/* Replace a node's children only when what it shows changed (no flicker, no reflow). */
function setContent(node, signature, build) {
	var sig = JSON.stringify(signature);
	if (node._whSig === sig)
		return false;
	node._whSig = sig;
	dom.content(node, build());
	return true;
}

function setText(node, text) {
	text = String(text == null ? '' : text);
	if (node.textContent !== text)
		node.textContent = text;
}

function show(node, visible) {
	node.style.display = visible ? '' : 'none';
}

function muted(text) {
	return E('span', { 'style': 'opacity:.7' }, [ text ]);
}

function formatTime(iso) {
	return iso ? String(iso).replace('T', ' ').replace(/Z$/, ' UTC') : '';
}

function hostPort(host, port) {
	host = String(host == null ? '' : host);
	if (!host)
		return String(port == null ? '' : port);
	return (host.indexOf(':') >= 0 ? '[' + host + ']' : host) + (port ? ':' + port : '');
}

/* Turns any reply or rejection of a write call into {reply} or {error: {code, field, message}}. */
function settle(promise) {
	return Promise.resolve(promise).then(function(reply) {
		if (isObject(reply) && isObject(reply.error))
			return { error: reply.error };
		if (!isObject(reply))
			return { error: { code: 'rpc', message: _('Unexpected reply from the router: %s').format(String(reply)) } };
		return { reply: reply };
	}, function(err) {
		return { error: { code: 'rpc', message: String(err && err.message || err) } };
	});
}

/* The fix a `check` finding offers, if any: "open" (set open=1) or "forward". */
function findingFix(f) {
	return (f.fix == 'open' || f.fix == 'forward') ? f.fix : null;
}

return view.extend({
	load: function() {
		return Promise.all([
			L.resolveDefault(callStatus(), {}),
			L.resolveDefault(callList(), {}),
			L.resolveDefault(callAccess('ubus', 'wormhole', 'add'), false),
			L.resolveDefault(callAccess('ubus', 'wormhole', 'update'), false),
			L.resolveDefault(callAccess('ubus', 'wormhole', 'del'), false)
		]);
	},

	render: function(data) {
		this.can = { add: !!data[2], update: !!data[3], del: !!data[4] };
		this.findings = {};
		this.polls = 0;
		this.seq = 0;
		this.shown = 0;

		var page = E('div', { 'id': 'wormhole' }, [
			E('h2', {}, [ _('Inbound Services') ]),
			E('div', { 'class': 'cbi-map-descr' }, [
				_('Replies to connections that arrive on these ports leave by the uplink they came in by, ' +
				  'not through the VPN tunnel. Anything the router or the LAN starts itself still uses the tunnel.')
			]),
			this.renderHeader(),
			(this.can.add || this.can.update || this.can.del) ? '' :
				E('div', { 'class': 'alert-message notice', 'id': 'wh-readonly' }, [
					_('You have read-only access to this page: nothing can be changed here.')
				]),
			this.renderExemptions(),
			this.renderRedirects()
		]);

		this.update(data[0], data[1]);
		this.refreshCheck();
		poll.add(this.pollOnce.bind(this));

		return page;
	},

	/* --- status header ------------------------------------------------------------- */

	renderHeader: function() {
		this.hdr = {
			backend: E('td', { 'class': 'td', 'id': 'wh-backend' }),
			killswitch: E('td', { 'class': 'td', 'id': 'wh-killswitch' }),
			apply: E('td', { 'class': 'td', 'id': 'wh-last-apply' }),
			warnings: E('div', { 'class': 'alert-message warning', 'id': 'wh-warnings', 'style': 'display:none' }),
			failure: E('div', { 'class': 'alert-message error', 'id': 'wh-load-error', 'style': 'display:none' })
		};

		var row = function(title, cell) {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }, [ title ]), cell
			]);
		};

		return E('div', { 'class': 'cbi-section', 'id': 'wh-status' }, [
			E('table', { 'class': 'table' }, [
				row(_('Firewall'), this.hdr.backend),
				row(_('Kill-switch'), this.hdr.killswitch),
				row(_('Last apply'), this.hdr.apply)
			]),
			this.hdr.failure,
			this.hdr.warnings
		]);
	},

	updateHeader: function(st) {
		var ks = isObject(st.killswitch) ? st.killswitch : {},
		    la = isObject(st.last_apply) ? st.last_apply : {};

		setContent(this.hdr.backend, [ st.backend, st.enabled ], function() {
			var name = { fw4: _('fw4 (nftables)'), fw3: _('fw3 (iptables)') }[st.backend] || String(st.backend || '?');
			return [ name, st.enabled === false ? muted(' — ' + _('wormhole is disabled: no rules are loaded')) : '' ];
		});

		this.hdr.killswitch.setAttribute('data-active', ks.active ? '1' : '0');
		setContent(this.hdr.killswitch, [ ks.active, ks.via, ks.reason ], function() {
			return [
				E('span', { 'style': 'color:' + (ks.active ? STATES.active.color : STATES.disabled.color) }, [
					ks.active ? '● ' + _('Active via %s').format(ks.via || '?') : _('Off')
				]),
				ks.reason ? E('div', { 'style': 'opacity:.7' }, [ ks.reason ]) : ''
			];
		});

		this.hdr.apply.setAttribute('data-ok', la.ok === false ? '0' : (la.ok ? '1' : ''));
		setContent(this.hdr.apply, [ la.ok, la.time, la.error ], function() {
			if (la.ok == null)
				return [ _('Not applied yet') ];
			if (la.ok)
				return [ _('Succeeded'), muted(' ' + formatTime(la.time)) ];
			return [
				E('span', { 'style': 'color:' + STATES.error.color }, [ '● ' + _('Failed') ]),
				muted(' ' + formatTime(la.time)),
				E('div', { 'class': 'wh-apply-error' }, [ la.error || _('no reason given') ])
			];
		});

		var warnings = Array.isArray(st.warnings) ? st.warnings : [];
		show(this.hdr.warnings, warnings.length > 0);
		setContent(this.hdr.warnings, warnings, function() {
			return warnings.map(function(w) { return E('div', {}, [ w ]) });
		});
	},

	/* --- exemptions card ----------------------------------------------------------- */

	renderExemptions: function() {
		this.exTable = E('table', { 'class': 'table', 'id': 'wh-exemptions-table' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				E('th', { 'class': 'th' }, [ _('Protocol') ]),
				E('th', { 'class': 'th' }, [ _('Port') ]),
				E('th', { 'class': 'th' }, [ _('Label') ]),
				E('th', { 'class': 'th' }, [ _('Status') ]),
				E('th', { 'class': 'th right' }, [ _('Hits') ]),
				E('th', { 'class': 'th center' }, [ _('Enabled') ]),
				E('th', { 'class': 'th cbi-section-actions' }, [ '' ])
			])
		]);

		this.inertBanner = E('div', { 'class': 'alert-message warning', 'id': 'wh-inert-banner', 'style': 'display:none' }, [
			E('strong', {}, [ _('The kill-switch is off.') ]), ' ',
			_('Internet traffic leaves by the uplink, so replies already take the right path: the exemptions below are inert. ' +
			  'They take effect as soon as a VPN tunnel holds the default route.')
		]);

		return E('div', { 'class': 'cbi-section', 'id': 'wh-exemptions' }, [
			E('h3', {}, [ _('Inbound Services') ]),
			E('div', { 'class': 'cbi-section-descr' }, [
				_('Services on the router (LuCI, SSH, a WireGuard listener) or behind a port forward that must stay ' +
				  'reachable from the internet while the VPN kill-switch is on. Use the public (WAN-side) port.')
			]),
			this.inertBanner,
			this.exTable,
			this.can.add ? this.renderExemptionForm() : ''
		]);
	},

	renderExemptionForm: function() {
		var f = this.exForm = {
			proto: E('select', { 'class': 'cbi-input-select', 'name': 'proto', 'aria-label': _('Protocol') },
				PROTOS.map(function(p) { return E('option', { 'value': p[0] }, [ p[1] ]) })),
			port: E('input', { 'class': 'cbi-input-text', 'name': 'port', 'type': 'text', 'size': '12',
				'placeholder': _('443 or 8000-8010'), 'aria-label': _('Port') }),
			label: E('input', { 'class': 'cbi-input-text', 'name': 'label', 'type': 'text',
				'placeholder': _('Label (optional)'), 'aria-label': _('Label') }),
			error: E('div', { 'class': 'alert-message error wh-form-error', 'style': 'display:none' })
		};
		var submit = this.submitExemption.bind(this);

		f.save = E('button', { 'class': 'cbi-button cbi-button-add', 'name': 'save',
			'click': ui.createHandlerFn(this, submit) }, [ _('Save') ]);
		this.onEnter([ f.port, f.label ], submit);

		return E('div', { 'class': 'cbi-section-create', 'id': 'wh-exemption-form' }, [
			E('div', { 'class': 'wh-form-row' }, [ f.proto, ' ', f.port, ' ', f.label, ' ', f.save ]),
			f.error
		]);
	},

	onEnter: function(inputs, fn) {
		inputs.forEach(function(input) {
			input.addEventListener('keydown', function(ev) {
				if (ev.key !== 'Enter' || ev.isComposing)
					return;
				ev.preventDefault();
				fn();
			});
		});
	},

	submitExemption: function() {
		var f = this.exForm, opts = {
			type: 'exemption',
			proto: f.proto.value,
			port: f.port.value.trim() || undefined,
			label: f.label.value.trim() || undefined
		};
		return this.submit(f, opts, function() {
			f.port.value = '';
			f.label.value = '';
			f.port.focus();
		});
	},

	/*
	 * Shared by both forms: one request at a time, the backend's message on failure.
	 * `swap` replaces an entry by the new one without a moment where neither exists
	 * and without losing the old one when the new one is refused: disable the old
	 * (so it no longer claims the port), add the new, then delete the old, or
	 * re-enable it if the add failed.
	 */
	submit: function(form, opts, onSaved, swap) {
		if (form.busy)
			return Promise.resolve();
		form.busy = true;
		form.save.disabled = true;
		this.clearFormError(form);

		var saved = function(res) { return !res.error || res.error.code == 'apply_failed' };
		var setEnabled = function(id, on) {
			return settle(callUpdate.apply(null, argsOf([ 'id' ].concat(ENTRY_OPTIONS), { id: id, enabled: on })));
		};

		return this.writing(function() {
			return (swap ? setEnabled(swap, false) : Promise.resolve({})).then(function(res) {
				if (!saved(res))
					return res;
				return settle(callAdd.apply(null, argsOf([ 'type' ].concat(ENTRY_OPTIONS), opts))).then(function(res) {
					if (swap)
						return (saved(res) ? settle(callDel(swap)) : setEnabled(swap, true)).then(function() { return res });
					return res;
				});
			});
		}).then((function(res) {
			if (saved(res))
				onSaved();
			if (res.error)	/* refused, or saved but the rules could not be loaded: say why */
				this.showFormError(form, res.error);
			if (saved(res) || swap)
				return this.refreshAll();
		}).bind(this)).finally(function() {
			form.busy = false;
			form.save.disabled = false;
		});
	},

	showFormError: function(form, err) {
		var input = err.field ? form[err.field] : null;
		dom.content(form.error, [ err.message || err.code || _('Unknown error') ]);
		form.error.setAttribute('data-code', err.code || '');
		form.error.setAttribute('data-field', err.field || '');
		show(form.error, true);
		if (input && input.classList) {
			input.classList.add('cbi-input-invalid');
			input.focus();
		}
	},

	clearFormError: function(form) {
		show(form.error, false);
		dom.content(form.error, null);
		Object.keys(form).forEach(function(k) {
			if (form[k] && form[k].classList)
				form[k].classList.remove('cbi-input-invalid');
		});
	},

	/* --- forwards card ------------------------------------------------------------- */

	renderRedirects: function() {
		this.rdTable = E('table', { 'class': 'table', 'id': 'wh-redirects-table' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				E('th', { 'class': 'th' }, [ _('Name') ]),
				E('th', { 'class': 'th' }, [ _('Protocol') ]),
				E('th', { 'class': 'th' }, [ _('Public port') ]),
				E('th', { 'class': 'th' }, [ _('Destination') ]),
				E('th', { 'class': 'th' }, [ _('Via') ]),
				E('th', { 'class': 'th' }, [ _('Client address') ]),
				E('th', { 'class': 'th' }, [ _('Status') ]),
				E('th', { 'class': 'th right' }, [ _('Hits') ]),
				E('th', { 'class': 'th center' }, [ _('Enabled') ]),
				E('th', { 'class': 'th cbi-section-actions' }, [ '' ])
			])
		]);

		return E('div', { 'class': 'cbi-section', 'id': 'wh-redirects' }, [
			E('h3', {}, [ _('Forwards') ]),
			E('div', { 'class': 'cbi-section-descr' }, [
				_('Port forwards to a LAN host, or over a WireGuard tunnel to a backend. Replies leave by the uplink ' +
				  'the connection came in by.')
			]),
			this.rdTable,
			this.can.add ? this.renderRedirectForm() : ''
		]);
	},

	renderRedirectForm: function() {
		var f = this.rdForm = {
			label: E('input', { 'class': 'cbi-input-text', 'name': 'label', 'type': 'text', 'size': '14',
				'placeholder': _('Name'), 'aria-label': _('Name') }),
			proto: E('select', { 'class': 'cbi-input-select', 'name': 'proto', 'aria-label': _('Protocol') },
				PROTOS.map(function(p) { return E('option', { 'value': p[0] }, [ p[1] ]) })),
			src_dport: E('input', { 'class': 'cbi-input-text', 'name': 'src_dport', 'type': 'text', 'size': '10',
				'placeholder': _('Public port'), 'aria-label': _('Public port') }),
			dest_ip: E('input', { 'class': 'cbi-input-text', 'name': 'dest_ip', 'type': 'text', 'size': '16',
				'placeholder': _('Destination host'), 'aria-label': _('Destination host') }),
			dest_port: E('input', { 'class': 'cbi-input-text', 'name': 'dest_port', 'type': 'text', 'size': '10',
				'placeholder': _('same port'), 'aria-label': _('Destination port') }),
			keep: E('input', { 'type': 'checkbox', 'name': 'keep_client', 'checked': 'checked' }),
			note: E('div', { 'class': 'alert-message notice wh-replaces', 'style': 'display:none' }),
			error: E('div', { 'class': 'alert-message error wh-form-error', 'style': 'display:none' }),
			replaces: null
		};
		var submit = this.submitRedirect.bind(this);

		f.snat = f.keep;	/* the backend's `snat` field is this checkbox, inverted */
		f.save = E('button', { 'class': 'cbi-button cbi-button-add', 'name': 'save',
			'click': ui.createHandlerFn(this, submit) }, [ _('Save') ]);
		this.onEnter([ f.label, f.src_dport, f.dest_ip, f.dest_port ], submit);

		return E('div', { 'class': 'cbi-section-create', 'id': 'wh-redirect-form' }, [
			E('div', { 'class': 'wh-form-row' }, [
				f.label, ' ', f.proto, ' ', f.src_dport, ' → ', f.dest_ip, ' : ', f.dest_port, ' ',
				E('label', { 'title': _('Off: the destination sees this router as the client (masquerade).') },
					[ f.keep, ' ', _('Keep client address') ]),
				' ', f.save
			]),
			E('div', { 'class': 'cbi-value-description' }, [
				_('With the client address kept, a backend behind a tunnel must send its replies back into the ' +
				  'tunnel (wormhole on the backend, with an exemption on its tunnel interface).')
			]),
			f.note,
			f.error
		]);
	},

	submitRedirect: function() {
		var f = this.rdForm, opts = {
			type: 'redirect',
			label: f.label.value.trim() || undefined,
			proto: f.proto.value,
			src_dport: f.src_dport.value.trim() || undefined,
			dest_ip: f.dest_ip.value.trim() || undefined,
			dest_port: f.dest_port.value.trim() || undefined,
			snat: f.keep.checked ? undefined : true
		};
		return this.submit(f, opts, (function() {
			[ f.label, f.src_dport, f.dest_ip, f.dest_port ].forEach(function(i) { i.value = '' });
			f.keep.checked = true;
			this.setReplaces(null);
			f.label.focus();
		}).bind(this), f.replaces ? f.replaces.id : null);
	},

	/*
	 * From an exemption whose port nothing on the router serves: offer a forward for the
	 * same public port instead. A forward routes its own replies, and the two would claim
	 * the same port, so saving the forward replaces the exemption.
	 */
	prefillForward: function(e) {
		var f = this.rdForm;
		if (!f)
			return;
		this.clearFormError(f);
		f.proto.value = e.proto;
		f.src_dport.value = e.port || '';
		if (!f.label.value && e.label)
			f.label.value = e.label;
		this.setReplaces(e);
		if (f.label.scrollIntoView)
			f.label.scrollIntoView({ block: 'center' });
		f.dest_ip.focus();
	},

	setReplaces: function(e) {
		var f = this.rdForm;
		f.replaces = e;
		show(f.note, !!e);
		dom.content(f.note, e ? [
			_('Saving this forward replaces the exemption %s %s: a forward routes its replies by the uplink itself.')
				.format(protoName(e.proto), e.port), ' ',
			E('button', { 'class': 'cbi-button', 'name': 'keep_exemption',
				'click': this.setReplaces.bind(this, null) }, [ _('Keep the exemption') ])
		] : null);
	},

	/* --- rows ---------------------------------------------------------------------- */

	/* Keep one row per entry id, in the backend's order, touching only what changed. */
	syncRows: function(table, entries, build, refresh, emptyText) {
		var want = {}, before = table.firstElementChild;	/* the title row */

		entries.forEach(function(e) { want[e.id] = true });
		Array.prototype.slice.call(table.querySelectorAll('tr[data-id]')).forEach(function(tr) {
			if (!want[tr.getAttribute('data-id')])
				table.removeChild(tr);
		});

		var placeholder = table.querySelector('tr.placeholder');
		if (entries.length && placeholder)
			table.removeChild(placeholder);
		else if (!entries.length && !placeholder)
			table.appendChild(E('tr', { 'class': 'tr placeholder' }, [
				E('td', { 'class': 'td', 'colspan': String(table.firstElementChild.children.length) },
					[ E('em', {}, [ emptyText ]) ])
			]));

		entries.forEach(function(e) {
			var tr = table.querySelector('tr[data-id="' + CSS.escape(String(e.id)) + '"]');
			if (!tr)
				tr = build(e);
			if (before.nextElementSibling !== tr)
				table.insertBefore(tr, before.nextElementSibling);
			refresh(tr, e);
			before = tr;
		});
	},

	cell: function(name, title) {
		return E('td', { 'class': 'td wh-' + name, 'data-title': title });
	},

	buildRow: function(e, cells) {
		var tr = E('tr', { 'class': 'tr', 'data-id': e.id }, cells.map((function(c) {
			return this.cell(c[0], c[1]);
		}).bind(this)));
		tr._whCells = {};
		cells.forEach(function(c, i) { tr._whCells[c[0]] = tr.children[i] });
		tr._whCells.enabled.appendChild(this.renderToggle(tr));
		if (this.can.del)
			tr._whCells.actions.appendChild(E('button', {
				'class': 'cbi-button cbi-button-remove wh-delete',
				'title': _('Delete'), 'aria-label': _('Delete'),
				'click': ui.createHandlerFn(this, 'deleteEntry', tr)
			}, [ '×' ]));
		return tr;
	},

	buildExemptionRow: function(e) {
		return this.buildRow(e, [
			[ 'proto', _('Protocol') ], [ 'port', _('Port') ], [ 'label', _('Label') ],
			[ 'status', _('Status') ], [ 'hits', _('Hits') ], [ 'enabled', _('Enabled') ], [ 'actions', '' ]
		]);
	},

	buildRedirectRow: function(e) {
		return this.buildRow(e, [
			[ 'label', _('Name') ], [ 'proto', _('Protocol') ], [ 'port', _('Public port') ],
			[ 'dest', _('Destination') ], [ 'via', _('Via') ], [ 'client', _('Client address') ],
			[ 'status', _('Status') ], [ 'hits', _('Hits') ], [ 'enabled', _('Enabled') ], [ 'actions', '' ]
		]);
	},

	renderToggle: function(tr) {
		var box = E('input', { 'type': 'checkbox', 'class': 'wh-toggle', 'aria-label': _('Enabled') });
		if (this.can.update)
			box.addEventListener('change', this.toggleEntry.bind(this, tr, box));
		else
			box.disabled = true;
		return box;
	},

	refreshExemptionRow: function(tr, e) {
		var c = tr._whCells;
		tr._whEntry = e;
		tr.setAttribute('data-status', e.status || '');
		setText(c.proto, protoName(e.proto));
		setText(c.port, e.port);
		c.label.classList.add('wh-label');
		setText(c.label, e.label || '');
		setText(c.hits, e.hits != null ? e.hits : '');
		c.hits.classList.add('right');
		this.refreshToggle(tr, e);
		this.refreshStatus(c.status, e);
	},

	refreshRedirectRow: function(tr, e) {
		var c = tr._whCells, via = { lan: _('LAN'), tunnel: _('Tunnel'), uplink: _('Uplink (hairpin)') };
		tr._whEntry = e;
		tr.setAttribute('data-status', e.status || '');
		setText(c.label, e.label || '');
		setText(c.proto, protoName(e.proto));
		setContent(c.port, [ e.src_dport, e.src, e.src_dip, e.src_ip ], function() {
			var from = toArray(e.src_ip);
			return [
				hostPort(e.src_dip, e.src_dport),
				e.src && e.src != 'wan' ? muted(' ' + _('on %s').format(e.src)) : '',
				from.length ? E('div', { 'style': 'opacity:.7' }, [ _('only from %s').format(from.join(', ')) ]) : ''
			];
		});
		setText(c.dest, hostPort(e.dest_ip, e.dest_port || e.src_dport));
		setText(c.via, e.via ? (via[e.via] || e.via) : '—');
		setText(c.client, e.snat ? _('Masqueraded') : _('Kept'));
		setText(c.hits, e.hits != null ? e.hits : '');
		c.hits.classList.add('right');
		this.refreshToggle(tr, e);
		this.refreshStatus(c.status, e);
	},

	refreshToggle: function(tr, e) {
		var box = tr._whCells.enabled.firstElementChild;
		tr._whCells.enabled.classList.add('center');
		if (!box._whBusy && box.checked !== isEnabled(e))
			box.checked = isEnabled(e);
	},

	/*
	 * Findings about this entry, one per kind: a finding with a known fix is said in
	 * the page's words with a button for it (the backend's text, written for the CLI,
	 * goes into the tooltip); any other finding is shown as the backend says it.
	 */
	hintsFor: function(e) {
		var seen = {}, out = [];
		(this.findings[e.id] || []).forEach(function(f) {
			/* a skipped section's reason is already shown as the row's error, and an
			 * option nothing reads as the row's warning (list's `warnings`) */
			if (f.level == 'ok' || (f.check == 'config' && (e.error ? f.level == 'error' : (e.warnings || []).length)))
				return;
			var fix = findingFix(f), key = fix || f.message;
			if (seen[key])
				return;
			seen[key] = true;
			out.push({ fix: fix, level: f.level, check: f.check, message: f.message });
		});
		return out;
	},

	refreshStatus: function(td, e) {
		var hints = this.hintsFor(e), self = this;

		setContent(td, [ e.status, e.error, e.warnings, hints, this.can, !!this.rdForm ], function() {
			var st = STATES[e.status] || STATES.error,
			    nodes = [ E('span', { 'class': 'wh-state', 'style': 'color:' + st.color },
				[ (st.dot ? '● ' : '') + (STATES[e.status] ? st.text() : String(e.status || '?')) ]) ];

			if (e.error)
				nodes.push(E('div', { 'class': 'wh-reason' }, [ e.error ]));
			(e.warnings || []).forEach(function(w) {
				nodes.push(E('div', { 'class': 'wh-warning', 'style': 'color:' + STATES.inert.color }, [ w ]));
			});

			hints.forEach(function(h) {
				nodes.push(E('div', {
					'class': 'wh-hint', 'data-check': h.check || '', 'data-level': h.level || '',
					'data-fix': h.fix || '', 'title': h.message || '',
					'style': 'color:' + (h.level == 'error' ? STATES.error.color : STATES.inert.color)
				}, [ self.hintText(h), self.renderFix(e, h.fix) ]));
			});
			return nodes;
		});
	},

	hintText: function(h) {
		if (h.fix == 'open')
			return _('A service on the router listens on this port, but no firewall rule accepts it from the internet.');
		if (h.fix == 'forward')
			return _('Nothing on the router listens on this port and no port forward sends it to a LAN host.');
		return h.message || '';
	},

	renderFix: function(e, fix) {
		if (fix == 'open' && this.can.update)
			return E('button', { 'class': 'cbi-button cbi-button-action wh-fix', 'data-fix': 'open',
				'style': 'margin-left:.5em', 'click': ui.createHandlerFn(this, 'openPort', e)
			}, [ _('Open port') ]);
		if (fix == 'forward' && this.can.add && this.rdForm)
			return E('button', { 'class': 'cbi-button cbi-button-action wh-fix', 'data-fix': 'forward',
				'style': 'margin-left:.5em', 'click': this.prefillForward.bind(this, e)
			}, [ _('Add a forward') ]);
		return '';
	},

	/* --- row actions --------------------------------------------------------------- */

	notifyError: function(err) {
		ui.addNotification(null, E('p', {}, [ err.message || err.code || _('Unknown error') ]), 'danger');
	},

	afterWrite: function(res) {
		if (res.error)
			this.notifyError(res.error);
		return this.refreshAll();
	},

	deleteEntry: function(tr) {
		return this.writing(function() { return settle(callDel(tr.getAttribute('data-id'))) })
			.then(this.afterWrite.bind(this));
	},

	toggleEntry: function(tr, box) {
		box._whBusy = true;
		box.disabled = true;
		return this.writing(function() {
			return settle(callUpdate.apply(null, argsOf([ 'id' ].concat(ENTRY_OPTIONS),
				{ id: tr.getAttribute('data-id'), enabled: box.checked })));
		}).then((function(res) {
			if (res.error && res.error.code != 'apply_failed')
				box.checked = !box.checked;
			return this.afterWrite(res);
		}).bind(this)).finally(function() {
			box._whBusy = false;
			box.disabled = false;
		});
	},

	openPort: function(e) {
		return this.writing(function() {
			return settle(callUpdate.apply(null, argsOf([ 'id' ].concat(ENTRY_OPTIONS), { id: e.id, open: true })));
		}).then(this.afterWrite.bind(this));
	},

	/* --- refresh ------------------------------------------------------------------- */

	update: function(st, list) {
		st = isObject(st) ? st : {};
		list = isObject(list) ? list : {};

		var ks = isObject(st.killswitch) ? st.killswitch : {},
		    failure = (isObject(list.error) && list.error.message) ||
		              (!Array.isArray(list.exemptions) ? _('No reply from the wormhole service (is the wormhole package installed and rpcd restarted?)') : null);

		this.status = st;
		this.updateHeader(st);
		show(this.hdr.failure, !!failure);
		setContent(this.hdr.failure, [ failure ], function() { return [ failure || '' ] });
		show(this.inertBanner, !ks.active);

		this.syncRows(this.exTable, Array.isArray(list.exemptions) ? list.exemptions : [],
			this.buildExemptionRow.bind(this), this.refreshExemptionRow.bind(this),
			_('No inbound services yet. Add the public port of a service below.'));
		this.syncRows(this.rdTable, Array.isArray(list.redirects) ? list.redirects : [],
			this.buildRedirectRow.bind(this), this.refreshRedirectRow.bind(this),
			_('No forwards.'));
	},

	/*
	 * A reply may describe a change half done (saved, not yet applied: "not in the
	 * kernel's rules") when it overlapped a write of ours, and replies may arrive out
	 * of order. So a reply paints only if it is the newest and no write of ours ran
	 * while it was on its way; every write ends with a refresh of its own.
	 */
	writing: function(run) {
		var done = (function() { this.inflight-- }).bind(this);
		this.inflight = (this.inflight || 0) + 1;
		this.writes = (this.writes || 0) + 1;
		return Promise.resolve().then(run).then(function(v) { done(); return v }, function(e) { done(); throw e });
	},

	current: function(writes) {
		return !this.inflight && (this.writes || 0) == writes;
	},

	refresh: function() {
		var seq = ++this.seq, writes = this.writes || 0;
		return Promise.all([ L.resolveDefault(callStatus(), {}), L.resolveDefault(callList(), {}) ])
			.then((function(data) {
				if (seq < this.shown || !this.current(writes))
					return;
				this.shown = seq;
				this.update(data[0], data[1]);
			}).bind(this));
	},

	refreshCheck: function() {
		var writes = this.writes || 0;
		return L.resolveDefault(callCheck(), {}).then((function(res) {
			if (!this.current(writes))
				return;
			var byId = {};
			(Array.isArray(res.findings) ? res.findings : []).forEach(function(f) {
				if (!isObject(f) || f.id == null)
					return;
				(byId[f.id] = byId[f.id] || []).push(f);
			});
			this.findings = byId;
			this.refreshRowsStatus();
		}).bind(this));
	},

	refreshRowsStatus: function() {
		var self = this;
		[ this.exTable, this.rdTable ].forEach(function(table) {
			table.querySelectorAll('tr[data-id]').forEach(function(tr) {
				if (tr._whEntry)
					self.refreshStatus(tr._whCells.status, tr._whEntry);
			});
		});
	},

	refreshAll: function() {
		return Promise.all([ this.refresh(), this.refreshCheck() ]);
	},

	pollOnce: function() {
		return (++this.polls % CHECK_EVERY) ? this.refresh() : this.refreshAll();
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
