'use strict';
'require view';
'require dom';
'require poll';
'require rpc';
'require ui';

/*
 * Network → Inbound Services: exemptions (replies leave by the uplink their connection
 * came in by), forwards (redirects) and the service settings, over the `wormhole` ubus
 * object. Laid out as LuCI's table sections are (luci-app-firewall's Port Forwards): a
 * table per section type with Edit / Delete per row, Add and Edit open a modal with
 * General and Advanced tabs built from LuCI's ui widgets.
 *
 * Why not form.Map: it reads and writes UCI, and this page writes only through the
 * backend's methods (its validation, its lock, its atomic apply), so the ACL grants no
 * `uci` write. The modal is what GridSection renders, without its UCI store.
 *
 * Rules this file keeps:
 *  - every string from the router (labels, names, messages, findings) reaches the DOM
 *    as a text node: an array child of E(), never a bare string child (markup to LuCI);
 *  - validation lives in the backend; its {error: {code, field, message}} is shown in
 *    the page's words (by code) next to the field it names, its message as the detail;
 *  - one ubus call per poll (`list` with `status`), `check` every CHECK_EVERY polls;
 *    rows and cells are updated in place, a modal or the settings being edited are
 *    never touched by a poll;
 *  - controls that write exist only when the session may call the write methods.
 */

var ENTRY_OPTIONS = [
	'proto', 'port', 'label', 'interface', 'family', 'open', 'enabled',
	'src', 'src_dport', 'src_dip', 'src_ip', 'dest_ip', 'dest_port', 'snat', 'mss', 'reply', 'reflection'
];
var MAIN_OPTIONS = [ 'enabled', 'backend', 'mark_mask', 'priority', 'table_base', 'fwmark_accept' ];

var callPage = rpc.declare({ object: 'wormhole', method: 'list', params: [ 'status' ], expect: { '': {} } });
var callCheck = rpc.declare({ object: 'wormhole', method: 'check', expect: { '': {} } });
var callAdd = rpc.declare({ object: 'wormhole', method: 'add', params: [ 'type' ].concat(ENTRY_OPTIONS), reject: true });
var callUpdate = rpc.declare({ object: 'wormhole', method: 'update', params: [ 'id' ].concat(ENTRY_OPTIONS), reject: true });
var callDel = rpc.declare({ object: 'wormhole', method: 'del', params: [ 'id' ], reject: true });
var callSettings = rpc.declare({ object: 'wormhole', method: 'settings', params: MAIN_OPTIONS, reject: true });
var callAccess = rpc.declare({ object: 'session', method: 'access',
	params: [ 'scope', 'object', 'function' ], expect: { access: false } });

var CHECK_EVERY = 6;	/* polls between two runs of the (heavier) `check` method */

var PROTOS = { tcp: 'TCP', udp: 'UDP', tcpudp: 'TCP+UDP' };

/* The page's words for the backend's error codes; its message is shown as the detail. */
function errorTitle(code) {
	switch (code) {
	case 'invalid_argument': return _('The router refused this value.');
	case 'conflict': return _('Another entry already uses this port on this uplink.');
	case 'not_found': return _('This entry no longer exists: it was removed elsewhere.');
	case 'config_error': return _('The configuration file cannot be read; fix it over SSH first.');
	case 'apply_failed': return _('Saved, but the firewall rules could not be loaded: the previous rules stay in force.');
	case 'busy': return _('Another change is being applied right now. Try again.');
	default: return _('The router gave no usable reply.');
	}
}

function stateText(status) {
	switch (status) {
	case 'active': return _('Active');
	case 'inert': return _('Inert');
	case 'pending': return _('Applying…');
	case 'disabled': return _('Disabled');
	case 'error': return _('Error');
	default: return String(status == null ? '?' : status);
	}
}

/* LuCI's label classes, so every theme (and dark mode) colours the state its own way. */
var STATE_CLASS = { active: 'success', inert: 'warning', pending: 'notice', error: 'danger', disabled: '' };

/*
 * Every option of both entry types, as the modal shows them. `tab` places it, `widget`
 * picks the ui class; `choices` is an object or a function of the page. The titles and
 * descriptions say what the backend's option table (rpcd/wormhole/schema.py) says.
 */
function entryFields(kind) {
	var protos = function() { return { tcp: 'TCP', udp: 'UDP', tcpudp: _('TCP and UDP') } };
	var uplinks = function(page, value) { return page.uplinkChoices(value) };
	var enabled = { name: 'enabled', tab: 'general', widget: 'flag', title: _('Enabled'), empty: '1' };
	var allow = { name: 'src_ip', tab: 'advanced', widget: 'list', title: _('Allowed clients'),
		placeholder: '198.51.100.0/24',
		description: _('Only these client addresses or prefixes (IPv4 or IPv6). Empty: anyone.') };

	if (kind == 'exemption')
		return [
			{ name: 'label', tab: 'general', widget: 'text', title: _('Label'), placeholder: _('e.g. LuCI over HTTPS') },
			{ name: 'proto', tab: 'general', widget: 'select', title: _('Protocol'), choices: protos, empty: 'tcp' },
			{ name: 'port', tab: 'general', widget: 'text', title: _('Port'), placeholder: '443',
				description: _('The public (WAN-side) port or range, e.g. 443 or 8000-8010.') },
			{ name: 'interface', tab: 'general', widget: 'select', title: _('Uplink'), choices: uplinks, empty: 'wan',
				description: _('The interface the connections arrive on; their replies leave by it.') },
			{ name: 'open', tab: 'general', widget: 'flag', title: _('Open port'), empty: '0',
				description: _('Also accept the port in the firewall (for a service on the router itself).') },
			enabled,
			{ name: 'family', tab: 'advanced', widget: 'select', title: _('Address family'), empty: 'any',
				choices: function() { return { any: _('IPv4 and IPv6'), ipv4: _('IPv4 only'), ipv6: _('IPv6 only') } } },
			allow
		];

	return [
		{ name: 'label', tab: 'general', widget: 'text', title: _('Name'), placeholder: _('e.g. Home Assistant') },
		{ name: 'proto', tab: 'general', widget: 'select', title: _('Protocol'), choices: protos, empty: 'tcp' },
		{ name: 'src', tab: 'general', widget: 'select', title: _('Uplink'), choices: uplinks, empty: 'wan',
			description: _('The interface the connections arrive on.') },
		{ name: 'src_dport', tab: 'general', widget: 'text', title: _('Public port'), placeholder: '8443',
			description: _('A port or a range, e.g. 8443 or 27015-27030.') },
		{ name: 'dest_ip', tab: 'general', widget: 'text', title: _('Destination host'), placeholder: '192.168.1.20',
			description: _('A LAN host, or a backend behind a WireGuard tunnel.') },
		{ name: 'dest_port', tab: 'general', widget: 'text', title: _('Destination port'), placeholder: _('same as the public port'),
			description: _('A range maps one to one onto the public range.') },
		{ name: 'snat', tab: 'general', widget: 'flag', title: _('Masquerade'), empty: '0',
			description: _('The destination sees this router as the client. Off: it sees the real client, and a backend behind a tunnel must send its replies back into the tunnel (wormhole on the backend, with an exemption on its tunnel interface).') },
		enabled,
		{ name: 'src_dip', tab: 'advanced', widget: 'text', title: _('Public address'), placeholder: _('any'),
			description: _('Only connections to this public destination address.') },
		allow,
		{ name: 'mss', tab: 'advanced', widget: 'text', title: _('TCP MSS'), placeholder: _('route MTU'),
			description: _('Clamp the TCP maximum segment size to this number; empty: to the route MTU.') },
		{ name: 'reply', tab: 'advanced', widget: 'flag', title: _('Route replies by the uplink'), empty: '1',
			description: _('Replies leave by the uplink the connection came in by, not through the VPN.') },
		{ name: 'reflection', tab: 'advanced', widget: 'flag', title: _('NAT loopback'), empty: '1',
			description: _('LAN clients reach the forward by the uplink\'s public IPv4 address too.') }
	];
}

function settingsFields() {
	return [
		{ name: 'backend', tab: 'general', widget: 'select', title: _('Firewall'), empty: 'auto',
			choices: function() { return { auto: _('Automatic'), fw4: _('fw4 (nftables)'), fw3: _('fw3 (iptables)') } } },
		{ name: 'mark_mask', tab: 'advanced', widget: 'text', title: _('Mark mask'), placeholder: '0xff000000',
			description: _('The firewall mark bits wormhole owns; keep them apart from other packages\' marks (pbr, mwan3, Tailscale).') },
		{ name: 'priority', tab: 'advanced', widget: 'text', title: _('Rule priority'), placeholder: '90',
			description: _('The ip rule priority of the reply-routing rules.') },
		{ name: 'table_base', tab: 'advanced', widget: 'text', title: _('Routing table base'), placeholder: '4090',
			description: _('The routing tables wormhole owns start above this number.') },
		{ name: 'fwmark_accept', tab: 'advanced', widget: 'flag', title: _('Set tcp_fwmark_accept'), empty: '1',
			description: _('Router services answer by the right uplink from the first packet (net.ipv4.tcp_fwmark_accept).') }
	];
}

/* --- small helpers ------------------------------------------------------------------- */

function isObject(v) {
	return v != null && typeof v == 'object' && !Array.isArray(v);
}

function toArray(v) {
	return v == null ? [] : (Array.isArray(v) ? v : String(v).split(/\s+/).filter(Boolean));
}

/* `enabled` is a boolean for valid entries, raw UCI text for the ones the backend skipped. */
function isEnabled(e) {
	return [ false, 0, '0', 'no', 'off', 'false', 'disabled' ].indexOf(e.enabled) < 0;
}

/* An option as the widgets hold it: text, '1'/'0' for flags, an array for lists. */
function asText(v) {
	if (v === true) return '1';
	if (v === false) return '0';
	if (Array.isArray(v)) return v.map(String);
	return v == null ? '' : String(v);
}

function sameValue(a, b) {
	return JSON.stringify(a) === JSON.stringify(b);
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

function small(text) {
	return E('small', {}, [ text ]);
}

function badge(status) {
	var cls = STATE_CLASS[status];
	return E('span', { 'class': 'label wh-state' + (cls ? ' ' + cls : '') }, [ stateText(status) ]);
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
			return { error: { code: 'rpc', message: String(reply) } };
		return { reply: reply };
	}, function(err) {
		return { error: { code: 'rpc', message: String(err && err.message || err) } };
	});
}

/* Written and in effect, or written with the rules left as they were: the config changed. */
function saved(res) {
	return !res.error || res.error.code == 'apply_failed';
}

/* The fix a `check` finding offers, if any: "open" (set open=1) or "forward". */
function findingFix(f) {
	return (f.fix == 'open' || f.fix == 'forward') ? f.fix : null;
}

/*
 * A set of fields (a modal's, or the settings section's) built from LuCI's ui widgets in
 * the markup form.js gives a section: .cbi-value rows in tab panes. It knows the values
 * it started from, so a save sends only what the user changed, and it shows a backend
 * error on the field the error names.
 */
var Fields = function(page, fields, values, idPrefix) {
	this.page = page;
	this.fields = fields;
	this.start = {};
	this.widgets = {};
	this.rows = {};
	this.idPrefix = idPrefix;

	fields.forEach((function(f) {
		var v = asText(values[f.name]);
		if (f.widget == 'list' ? !v.length : v === '')
			v = f.widget == 'list' ? [] : (f.empty || '');
		this.start[f.name] = v;
	}).bind(this));
};

Fields.prototype = {
	widgetFor: function(f) {
		var id = this.idPrefix + f.name, v = this.start[f.name];
		switch (f.widget) {
		case 'select':
			var choices = Object.assign({}, typeof f.choices == 'function' ? f.choices(this.page, v) : f.choices);
			if (v !== '' && !(v in choices))
				choices[v] = v;
			return new ui.Select(v, choices, { id: id, name: f.name, sort: false });
		case 'flag':
			return new ui.Checkbox(v, { id: id, name: f.name, value_enabled: '1', value_disabled: '0' });
		case 'list':
			return new ui.DynamicList(v, null, { id: id, name: f.name, placeholder: f.placeholder });
		default:
			return new ui.Textfield(v, { id: id, name: f.name, placeholder: f.placeholder, optional: true });
		}
	},

	row: function(f) {
		var w = this.widgets[f.name] = this.widgetFor(f);
		var detail = E('div', { 'class': 'cbi-value-description wh-field-error', 'style': 'display:none' });
		var row = this.rows[f.name] = E('div', { 'class': 'cbi-value', 'data-name': f.name, 'id': 'cbi-' + this.idPrefix + f.name }, [
			E('label', { 'class': 'cbi-value-title', 'for': 'widget.' + this.idPrefix + f.name }, [ f.title ]),
			E('div', { 'class': 'cbi-value-field' }, [
				w.render(),
				f.description ? E('div', { 'class': 'cbi-value-description' }, [ f.description ]) : '',
				detail
			])
		]);
		row._whDetail = detail;
		return row;
	},

	/* Tab panes as form.js builds them; ui.tabs turns them into LuCI's tab menu. */
	render: function(tabs) {
		var panes = tabs.map((function(t) {
			return E('div', { 'data-tab': t[0], 'data-tab-title': t[1] },
				this.fields.filter(function(f) { return f.tab == t[0] }).map(this.row.bind(this)));
		}).bind(this));
		var group = E('div', { 'class': 'cbi-section-node cbi-section-node-tabbed' }, panes);
		this.node = E('div', { 'class': 'cbi-section wh-fields' }, [ group ]);
		this.panes = panes;
		return this.node;
	},

	/* After the node is in the document: LuCI's tabs need the panes' parent in place. */
	initTabs: function() {
		ui.tabs.initTabGroup(this.panes);
	},

	/* A field's value as compared and sent: trimmed text, '1'/'0', or an array. */
	value: function(f) {
		var v = this.widgets[f.name].getValue();
		if (f.widget == 'list')
			return toArray(v);
		return f.widget == 'flag' ? v : String(v == null ? '' : v).trim();
	},

	/* {name: value} of the fields `keep(field, value)` selects, as the backend takes them. */
	collect: function(keep) {
		var out = {};
		this.fields.forEach((function(f) {
			var v = this.value(f);
			if (keep(f, v))
				out[f.name] = f.widget == 'flag' ? (v == '1') : v;
		}).bind(this));
		return out;
	},

	/* What an edit sends: the options the user changed ('' or [] clears one). */
	changes: function() {
		var start = this.start;
		return this.collect(function(f, v) { return !sameValue(v, start[f.name]) });
	},

	/* What an add sends: every field not on its default (the backend fills in the rest,
	 * so the new section holds only what the user chose, as `wormhole inbound add` writes). */
	filled: function() {
		return this.collect(function(f, v) {
			return f.widget == 'list' ? v.length > 0 : (v !== '' && v !== (f.empty || ''));
		});
	},

	clearErrors: function() {
		Object.keys(this.rows).forEach((function(name) {
			var row = this.rows[name];
			row.classList.remove('wh-invalid');
			row.querySelectorAll('.cbi-input-invalid').forEach(function(n) { n.classList.remove('cbi-input-invalid') });
			show(row._whDetail, false);
			dom.content(row._whDetail, null);
		}).bind(this));
	},

	/* true when the error names one of these fields (then it is shown there). */
	showError: function(err) {
		var row = err.field ? this.rows[err.field] : null;
		if (!row)
			return false;
		row.classList.add('wh-invalid');
		row.querySelectorAll('input[type=text], select').forEach(function(n) { n.classList.add('cbi-input-invalid') });
		dom.content(row._whDetail, [ E('strong', {}, [ errorTitle(err.code) ]), ' ', E('span', { 'class': 'wh-error-detail' }, [ err.message || '' ]) ]);
		row._whDetail.setAttribute('data-code', err.code || '');
		show(row._whDetail, true);
		var tab = row.parentNode && row.parentNode.getAttribute('data-tab'),
		    link = tab && this.node.parentNode && this.node.parentNode.querySelector('.cbi-tabmenu li[data-tab="' + tab + '"] a');
		if (link && row.parentNode.getAttribute('data-tab-active') != 'true')
			link.click();
		var input = row.querySelector('input[type=text], select');
		if (input)
			input.focus();
		return true;
	}
};

return view.extend({
	load: function() {
		return Promise.all([
			L.resolveDefault(callPage(true), {}),
			L.resolveDefault(callAccess('ubus', 'wormhole', 'add'), false),
			L.resolveDefault(callAccess('ubus', 'wormhole', 'update'), false),
			L.resolveDefault(callAccess('ubus', 'wormhole', 'del'), false),
			L.resolveDefault(callAccess('ubus', 'wormhole', 'settings'), false)
		]);
	},

	render: function(data) {
		this.can = { add: !!data[1], update: !!data[2], del: !!data[3], settings: !!data[4] };
		this.findings = {};
		this.polls = 0;
		this.seq = 0;
		this.shown = 0;
		this.status = {};

		var writable = this.can.add || this.can.update || this.can.del || this.can.settings;
		var page = E('div', { 'class': 'cbi-map', 'id': 'wormhole' }, [
			E('h2', {}, [ _('Inbound Services') ]),
			E('div', { 'class': 'cbi-map-descr' }, [
				_('Replies to connections that arrive on these ports leave by the uplink they came in by, not through the VPN tunnel. Anything the router or the LAN starts itself still uses the tunnel.')
			]),
			writable ? '' : E('div', { 'class': 'alert-message notice', 'id': 'wh-readonly' }, [
				_('You have read-only access to this page: nothing can be changed here.')
			]),
			this.renderHeader(),
			this.renderSection('exemption'),
			this.renderSection('redirect'),
			this.renderSettings()
		]);

		this.update(data[0]);
		this.refreshCheck();
		poll.add(this.pollOnce.bind(this));

		return page;
	},

	/* --- status and the global switch ----------------------------------------------------- */

	renderHeader: function() {
		this.hdr = {
			service: E('td', { 'class': 'td', 'id': 'wh-service' }),
			backend: E('td', { 'class': 'td', 'id': 'wh-backend' }),
			killswitch: E('td', { 'class': 'td', 'id': 'wh-killswitch' }),
			apply: E('td', { 'class': 'td', 'id': 'wh-last-apply' }),
			warnings: E('div', { 'class': 'alert-message warning', 'id': 'wh-warnings', 'style': 'display:none' }),
			failure: E('div', { 'class': 'alert-message error', 'id': 'wh-load-error', 'style': 'display:none' })
		};

		var row = function(title, cell) {
			return E('tr', { 'class': 'tr' }, [ E('td', { 'class': 'td left', 'width': '33%' }, [ title ]), cell ]);
		};

		return E('div', { 'class': 'cbi-section', 'id': 'wh-status' }, [
			E('h3', {}, [ _('Status') ]),
			E('table', { 'class': 'table' }, [
				row(_('Service'), this.hdr.service),
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
		    la = isObject(st.last_apply) ? st.last_apply : {},
		    self = this;

		this.hdr.service.setAttribute('data-enabled', st.enabled === false ? '0' : '1');
		setContent(this.hdr.service, [ st.enabled, this.can.settings, !!st.backend ], function() {
			if (!st.backend)
				return [ '—' ];
			var on = st.enabled !== false;
			return [
				E('span', { 'class': 'label' + (on ? ' success' : '') }, [ on ? _('Enabled') : _('Disabled') ]), ' ',
				self.can.settings ? E('button', {
					'class': 'cbi-button ' + (on ? 'cbi-button-negative' : 'cbi-button-positive'),
					'id': 'wh-global-toggle',
					'click': ui.createHandlerFn(self, 'setEnabled', !on)
				}, [ on ? _('Disable') : _('Enable') ]) : '',
				on ? '' : E('div', {}, [ small(_('No rules are loaded: inbound services fall back to the VPN\'s behaviour.')) ])
			];
		});

		setContent(this.hdr.backend, [ st.backend ], function() {
			return [ { fw4: _('fw4 (nftables)'), fw3: _('fw3 (iptables)') }[st.backend] || String(st.backend || '?') ];
		});

		this.hdr.killswitch.setAttribute('data-active', ks.active ? '1' : '0');
		setContent(this.hdr.killswitch, [ ks.active, ks.via, ks.reason ], function() {
			return [
				E('span', { 'class': 'label' + (ks.active ? ' success' : '') }, [
					ks.active ? _('Active via %s').format(ks.via || '?') : _('Off')
				]),
				ks.reason ? E('div', {}, [ small(ks.reason) ]) : ''
			];
		});

		this.hdr.apply.setAttribute('data-ok', la.ok === false ? '0' : (la.ok ? '1' : ''));
		setContent(this.hdr.apply, [ la.ok, la.time, la.error ], function() {
			if (la.ok == null)
				return [ _('Not applied yet') ];
			if (la.ok)
				return [ _('Succeeded'), ' ', small(formatTime(la.time)) ];
			return [
				E('span', { 'class': 'label danger' }, [ _('Failed') ]), ' ', small(formatTime(la.time)),
				E('div', { 'class': 'wh-apply-error' }, [ la.error || _('no reason given') ])
			];
		});

		var warnings = Array.isArray(st.warnings) ? st.warnings : [];
		show(this.hdr.warnings, warnings.length > 0);
		setContent(this.hdr.warnings, warnings, function() {
			return warnings.map(function(w) { return E('div', {}, [ w ]) });
		});
	},

	setEnabled: function(on) {
		return this.writing(function() { return settle(callSettings(on)) }).then(this.afterWrite.bind(this));
	},

	/* --- the two table sections ---------------------------------------------------------- */

	columns: function(kind) {
		if (kind == 'exemption')
			return [
				[ 'proto', _('Protocol') ], [ 'port', _('Port') ], [ 'uplink', _('Uplink') ], [ 'family', _('Family') ],
				[ 'clients', _('Clients') ], [ 'label', _('Label') ], [ 'status', _('Status') ], [ 'hits', _('Hits') ],
				[ 'enabled', _('Enabled') ]
			];
		return [
			[ 'label', _('Name') ], [ 'proto', _('Protocol') ], [ 'port', _('Public port') ], [ 'uplink', _('Uplink') ],
			[ 'dest', _('Destination') ], [ 'clients', _('Clients') ], [ 'via', _('Via') ], [ 'client', _('Client address') ],
			[ 'status', _('Status') ], [ 'hits', _('Hits') ], [ 'enabled', _('Enabled') ]
		];
	},

	renderSection: function(kind) {
		var cols = this.columns(kind), isEx = kind == 'exemption';
		var table = E('table', { 'class': 'table cbi-section-table', 'id': isEx ? 'wh-exemptions-table' : 'wh-redirects-table' }, [
			E('tr', { 'class': 'tr table-titles cbi-section-table-titles' }, cols.map(function(c) {
				return E('th', { 'class': 'th cbi-section-table-cell wh-' + c[0] }, [ c[1] ]);
			}).concat([ E('th', { 'class': 'th cbi-section-table-cell cbi-section-actions' }, [ '' ]) ]))
		]);
		var nodes = [
			E('h3', {}, [ isEx ? _('Inbound Services') : _('Forwards') ]),
			E('div', { 'class': 'cbi-section-descr' }, [ isEx
				? _('Services on the router (LuCI, SSH, a WireGuard listener) or behind a port forward that must stay reachable from the internet while the VPN kill-switch is on. Use the public (WAN-side) port.')
				: _('Port forwards to a LAN host, or over a WireGuard tunnel to a backend. Replies leave by the uplink the connection came in by.') ])
		];

		if (isEx) {
			this.inertBanner = E('div', { 'class': 'alert-message warning', 'id': 'wh-inert-banner', 'style': 'display:none' }, [
				E('strong', {}, [ _('The kill-switch is off.') ]), ' ',
				_('Internet traffic leaves by the uplink, so replies already take the right path: the exemptions below are inert. They take effect as soon as a VPN tunnel holds the default route.')
			]);
			nodes.push(this.inertBanner);
			this.exTable = table;
		}
		else {
			this.rdTable = table;
		}
		nodes.push(table);

		if (this.can.add)
			nodes.push(E('div', { 'class': 'cbi-section-create cbi-tblsection-create' }, [
				E('button', {
					'class': 'cbi-button cbi-button-add', 'id': isEx ? 'wh-add-exemption' : 'wh-add-redirect',
					'title': isEx ? _('Add an inbound service') : _('Add a forward'),
					'click': ui.createHandlerFn(this, 'openModal', kind, null, null)
				}, [ _('Add') ])
			]));

		return E('div', { 'class': 'cbi-section cbi-tblsection', 'id': isEx ? 'wh-exemptions' : 'wh-redirects' }, nodes);
	},

	/* --- the modal: add and edit ------------------------------------------------------------ */

	uplinkChoices: function(current) {
		var out = {}, st = this.status || {};
		(Array.isArray(st.networks) ? st.networks : []).forEach(function(n) { out[n] = String(n) });
		if (!Object.keys(out).length)
			out.wan = 'wan';
		if (current)
			out[current] = String(current);
		return out;
	},

	/*
	 * entry: the row's entry (edit) or null (add); preset: values an add starts from
	 * (a fix offers them) with `replaces`, an exemption the new forward takes over.
	 */
	openModal: function(kind, entry, preset) {
		var values = Object.assign({}, entry || {}, preset || {}),
		    fields = new Fields(this, entryFields(kind), values, 'wh-m-'),
		    replaces = preset && preset.replaces,
		    title = entry
			? (kind == 'exemption' ? _('Edit inbound service') : _('Edit forward'))
			: (kind == 'exemption' ? _('Add inbound service') : _('Add forward'));

		var error = E('div', { 'class': 'alert-message error wh-modal-error', 'style': 'display:none' });
		var body = fields.render([ [ 'general', _('General Settings') ], [ 'advanced', _('Advanced Settings') ] ]);
		var save = E('button', {
			'class': 'btn cbi-button cbi-button-positive important', 'id': 'wh-modal-save',
			'click': ui.createHandlerFn(this, 'saveModal', kind, entry, fields, error, replaces)
		}, [ _('Save') ]);

		this.modal = { fields: fields };
		ui.showModal(title, [
			E('div', { 'id': 'wh-modal', 'data-kind': kind, 'data-id': entry ? entry.id : '' }, [
				replaces ? E('div', { 'class': 'alert-message notice wh-replaces' }, [
					_('Saving this forward replaces the inbound service %s %s: a forward routes its replies by the uplink itself.')
						.format(PROTOS[replaces.proto] || String(replaces.proto), String(replaces.port))
				]) : '',
				error,
				body
			]),
			E('div', { 'class': 'button-row' }, [
				E('button', { 'class': 'btn cbi-button', 'id': 'wh-modal-dismiss', 'click': this.closeModal.bind(this) }, [ _('Dismiss') ]),
				' ', save
			])
		], 'cbi-modal');
		fields.initTabs();
		this.submitOnEnter(body, save);
	},

	closeModal: function() {
		this.modal = null;
		ui.hideModal();
	},

	/* Enter in a text field saves, as in LuCI's own modals. */
	submitOnEnter: function(node, button) {
		node.addEventListener('keydown', function(ev) {
			if (ev.key === 'Enter' && !ev.isComposing && ev.target.matches('input[type=text]') &&
			    !ev.target.closest('.cbi-dynlist')) {
				ev.preventDefault();
				button.click();
			}
		});
	},

	saveModal: function(kind, entry, fields, error, replaces) {
		fields.clearErrors();
		show(error, false);

		var request;
		if (entry) {
			var changes = fields.changes();
			if (!Object.keys(changes).length) {
				this.closeModal();
				return Promise.resolve();
			}
			request = function() {
				return settle(callUpdate.apply(null, argsOf([ 'id' ].concat(ENTRY_OPTIONS), Object.assign({ id: entry.id }, changes))));
			};
		}
		else {
			var opts = fields.filled();
			request = (function() { return this.addEntry(kind, opts, replaces) }).bind(this);
		}

		return this.writing(request).then((function(res) {
			if (saved(res))
				this.closeModal();
			if (res.error) {
				if (saved(res))
					this.notifyError(res.error);		/* saved, not applied: the modal is gone */
				else if (!fields.showError(res.error))
					this.showModalError(error, res.error);
			}
			return this.refreshAll();
		}).bind(this));
	},

	/*
	 * An add that replaces an exemption (the "Add a forward" fix) never has a moment where
	 * neither exists and never loses the old one when the new one is refused: disable the
	 * old (so it no longer claims the port), add the new, then delete the old, or
	 * re-enable it if the add failed.
	 */
	addEntry: function(kind, opts, replaces) {
		var add = function() {
			return settle(callAdd.apply(null, argsOf([ 'type' ].concat(ENTRY_OPTIONS), Object.assign({ type: kind }, opts))));
		};
		if (!replaces)
			return add();
		var setEnabled = function(on) {
			return settle(callUpdate.apply(null, argsOf([ 'id' ].concat(ENTRY_OPTIONS), { id: replaces.id, enabled: on })));
		};
		return setEnabled(false).then(function(res) {
			if (!saved(res))
				return res;
			return add().then(function(res) {
				return (saved(res) ? settle(callDel(replaces.id)) : setEnabled(true)).then(function() { return res });
			});
		});
	},

	showModalError: function(node, err) {
		dom.content(node, [
			E('strong', {}, [ errorTitle(err.code) ]), ' ', E('span', { 'class': 'wh-error-detail' }, [ err.message || '' ])
		]);
		node.setAttribute('data-code', err.code || '');
		node.setAttribute('data-field', err.field || '');
		show(node, true);
	},

	/* --- settings ---------------------------------------------------------------------- */

	renderSettings: function() {
		this.settingsNode = E('div', { 'id': 'wh-settings-fields' });
		this.settingsError = E('div', { 'class': 'alert-message error wh-settings-error', 'style': 'display:none' });
		return E('div', { 'class': 'cbi-section', 'id': 'wh-settings' }, [
			E('h3', {}, [ _('Settings') ]),
			this.settingsError,
			this.settingsNode,
			this.can.settings ? E('div', { 'class': 'cbi-page-actions' }, [
				E('button', { 'class': 'cbi-button cbi-button-save', 'id': 'wh-settings-save',
					'click': ui.createHandlerFn(this, 'saveSettings') }, [ _('Save settings') ])
			]) : ''
		]);
	},

	/* Built from the first status that has settings, and again after each save: a poll
	 * never resets what the user is typing. */
	fillSettings: function(settings) {
		if (!isObject(settings))
			return;
		this.settings = new Fields(this, settingsFields(), settings, 'wh-s-');
		dom.content(this.settingsNode, this.settings.render([ [ 'general', _('General Settings') ], [ 'advanced', _('Advanced Settings') ] ]));
		this.settings.initTabs();
		if (!this.can.settings)
			this.settingsNode.querySelectorAll('input, select, button').forEach(function(n) { n.disabled = true });
	},

	saveSettings: function() {
		var fields = this.settings, changes = fields ? fields.changes() : {};
		fields && fields.clearErrors();
		show(this.settingsError, false);
		if (!Object.keys(changes).length)
			return Promise.resolve();
		return this.writing(function() {
			return settle(callSettings.apply(null, argsOf(MAIN_OPTIONS, changes)));
		}).then((function(res) {
			if (res.error && !fields.showError(res.error))
				this.showModalError(this.settingsError, res.error);
			if (saved(res))
				this.settings = null;		/* rebuilt from the next status */
			return this.refreshAll();
		}).bind(this));
	},

	/* --- rows ---------------------------------------------------------------------------- */

	/* Keep one row per entry id, in the backend's order, touching only what changed. */
	syncRows: function(table, entries, kind, emptyText) {
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
				E('td', { 'class': 'td', 'colspan': String(table.firstElementChild.children.length) }, [ E('em', {}, [ emptyText ]) ])
			]));

		entries.forEach((function(e) {
			var tr = table.querySelector('tr[data-id="' + CSS.escape(String(e.id)) + '"]') || this.buildRow(kind, e);
			if (before.nextElementSibling !== tr)
				table.insertBefore(tr, before.nextElementSibling);
			this.refreshRow(kind, tr, e);
			before = tr;
		}).bind(this));
	},

	buildRow: function(kind, e) {
		var cols = this.columns(kind), cells = {};
		var tr = E('tr', { 'class': 'tr cbi-section-table-row', 'data-id': e.id }, cols.map(function(c) {
			return (cells[c[0]] = E('td', { 'class': 'td cbi-value-field wh-' + c[0], 'data-title': c[1] }));
		}));
		var actions = E('td', { 'class': 'td cbi-section-table-cell nowrap cbi-section-actions' }, [ E('div', {}, [
			this.can.update ? E('button', { 'class': 'btn cbi-button cbi-button-edit wh-edit', 'title': _('Edit this entry'),
				'click': ui.createHandlerFn(this, function() { return this.openModal(kind, tr._whEntry, null) }) }, [ _('Edit') ]) : '',
			this.can.del ? E('button', { 'class': 'btn cbi-button cbi-button-remove wh-delete', 'title': _('Delete this entry'),
				'click': ui.createHandlerFn(this, 'deleteEntry', tr) }, [ _('Delete') ]) : ''
		]) ]);
		tr.appendChild(actions);

		var box = new ui.Checkbox('0', { id: 'wh-enabled-' + e.id, value_enabled: '1', value_disabled: '0' });
		cells.enabled.appendChild(box.render());
		cells.enabled.classList.add('center');
		var input = cells.enabled.querySelector('input[type=checkbox]');
		input.classList.add('wh-toggle');
		input.setAttribute('aria-label', _('Enabled'));
		if (this.can.update)
			input.addEventListener('change', this.toggleEntry.bind(this, tr, input));
		else
			input.disabled = true;

		cells.hits.classList.add('right');
		cells.label.classList.add('wh-label');
		tr._whCells = cells;
		tr._whToggle = input;
		return tr;
	},

	refreshRow: function(kind, tr, e) {
		var c = tr._whCells;
		tr._whEntry = e;
		tr.setAttribute('data-status', e.status || '');
		setText(c.proto, PROTOS[e.proto] || (e.proto == null ? '—' : String(e.proto)));
		setText(c.label, e.label || '');
		setText(c.hits, e.hits != null ? e.hits : '');
		setText(c.clients, toArray(e.src_ip).length ? toArray(e.src_ip).join(', ') : _('anyone'));

		if (kind == 'exemption') {
			setText(c.port, e.port);
			setText(c.uplink, e.interface || '');
			setText(c.family, { any: _('IPv4 and IPv6'), ipv4: _('IPv4'), ipv6: _('IPv6') }[e.family] || String(e.family || ''));
		}
		else {
			var via = { lan: _('LAN'), tunnel: _('Tunnel'), uplink: _('Uplink (hairpin)') };
			setText(c.port, hostPort(e.src_dip, e.src_dport));
			setText(c.uplink, e.src || '');
			setText(c.dest, hostPort(e.dest_ip, e.dest_port || e.src_dport));
			setText(c.via, e.via ? (via[e.via] || String(e.via)) : '—');
			setText(c.client, (e.snat === true || e.snat == '1') ? _('Masqueraded') : _('Kept'));
		}

		if (!tr._whToggle._whBusy && tr._whToggle.checked !== isEnabled(e))
			tr._whToggle.checked = isEnabled(e);
		this.refreshStatus(c.status, e);
	},

	/*
	 * Findings about this entry, one per kind: a finding with a known fix is said in the
	 * page's words with a button for it (the backend's text, written for the CLI, goes into
	 * the tooltip); any other finding is shown as the backend says it.
	 */
	hintsFor: function(e) {
		var seen = {}, out = [];
		(this.findings[e.id] || []).forEach(function(f) {
			/* a skipped section's reason is already the row's error, an option nothing reads its warning */
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

		setContent(td, [ e.status, e.error, e.warnings, hints, this.can ], function() {
			var nodes = [ badge(e.status) ];
			if (e.error)
				nodes.push(E('div', { 'class': 'wh-reason' }, [ small(e.error) ]));
			(e.warnings || []).forEach(function(w) {
				nodes.push(E('div', { 'class': 'wh-warning' }, [ small(w) ]));
			});
			hints.forEach(function(h) {
				nodes.push(E('div', {
					'class': 'wh-hint', 'data-check': h.check || '', 'data-level': h.level || '',
					'data-fix': h.fix || '', 'title': h.message || ''
				}, [ small(self.hintText(h)), ' ', self.renderFix(e, h.fix) ]));
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
				'click': ui.createHandlerFn(this, 'openPort', e) }, [ _('Open port') ]);
		if (fix == 'forward' && this.can.add)
			return E('button', { 'class': 'cbi-button cbi-button-action wh-fix', 'data-fix': 'forward',
				'click': ui.createHandlerFn(this, 'openModal', 'redirect', null,
					{ proto: e.proto, src_dport: e.port, label: e.label, src: e.interface, replaces: e }) }, [ _('Add a forward') ]);
		return '';
	},

	/* --- row actions ------------------------------------------------------------------- */

	notifyError: function(err) {
		ui.addNotification(null, E('p', {}, [
			E('strong', {}, [ errorTitle(err.code) ]), ' ', E('span', { 'class': 'wh-error-detail' }, [ err.message || '' ])
		]), 'danger');
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
			if (!saved(res))
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

	/* --- refresh ----------------------------------------------------------------------- */

	update: function(reply) {
		reply = isObject(reply) ? reply : {};
		var st = isObject(reply.status) ? reply.status : {},
		    ks = isObject(st.killswitch) ? st.killswitch : {},
		    failure = (isObject(reply.error) && reply.error.message) ||
		              (!Array.isArray(reply.exemptions) ? _('No reply from the wormhole service (is the wormhole package installed and rpcd restarted?)') : null);

		this.status = st;
		this.updateHeader(st);
		show(this.hdr.failure, !!failure);
		setContent(this.hdr.failure, [ failure ], function() { return [ failure || '' ] });
		show(this.inertBanner, !ks.active);
		if (!this.settings)
			this.fillSettings(st.settings);

		this.syncRows(this.exTable, Array.isArray(reply.exemptions) ? reply.exemptions : [], 'exemption',
			_('No inbound services yet.'));
		this.syncRows(this.rdTable, Array.isArray(reply.redirects) ? reply.redirects : [], 'redirect',
			_('No forwards.'));
	},

	/*
	 * A reply may describe a change half done (saved, not yet applied) when it overlapped a
	 * write of ours, and replies may arrive out of order. So a reply paints only if it is
	 * the newest and no write of ours ran while it was on its way; every write ends with a
	 * refresh of its own.
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
		return L.resolveDefault(callPage(true), {}).then((function(reply) {
			if (seq < this.shown || !this.current(writes))
				return;
			this.shown = seq;
			this.update(reply);
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
