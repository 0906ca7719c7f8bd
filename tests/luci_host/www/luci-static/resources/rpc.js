'use strict';
'require baseclass';
'require request';

/*
 * Stand-in for LuCI's rpc class (luci-base rpc.js), written for the wormhole browser
 * tests with the same observable behaviour:
 *
 *  - declare({object, method, params, expect, filter, reject}) returns a function whose
 *    positional arguments become the named `params` (undefined ones are dropped by JSON);
 *  - a JSON-RPC `call` is POSTed to the ubus endpoint as
 *    {jsonrpc: '2.0', id, method: 'call', params: [sid, object, method, args]};
 *  - HTTP errors and JSON-RPC errors (e.g. -32002 Access denied) reject with an RPCError;
 *  - a reply `result: [status, data]` resolves to data, `result: [status]` to the number
 *    `status` (so a non-zero ubus status resolves to a number unless `reject: true`);
 *  - `expect: {key: default}` picks reply[key] ('' = the whole reply) and falls back to
 *    the default when it is missing or of another type;
 *  - `filter(data, args, extra…)` transforms the result.
 */

var rpcRequestID = 1;

return baseclass.extend({
	__init__: function() {
		this.sessionID = L.env.sessionid || '00000000000000000000000000000000';
		this.baseURL = L.env.ubuspath || '/ubus/';
	},

	call: function(msg, object, method) {
		return request.post(this.baseURL.replace(/\/+$/, '') + '/' + object + '.' + method, msg, {
			timeout: (L.env.rpctimeout || 20) * 1000
		});
	},

	handleReply: function(req, res) {
		var msg, type = Object.prototype.toString, ret = null;

		if (!res.ok)
			L.raise('RPCError', 'RPC call to %s/%s failed with HTTP error %d: %s',
				req.object, req.method, res.status, res.statusText || '?');

		msg = res.json();

		if (!L.isObject(msg) || msg.jsonrpc != '2.0')
			L.raise('RPCError', 'RPC call to %s/%s returned invalid message frame',
				req.object, req.method);

		if (L.isObject(msg.error) && msg.error.code && msg.error.message)
			L.raise('RPCError', 'RPC call to %s/%s failed with error %d: %s',
				req.object, req.method, msg.error.code, msg.error.message || '?');

		if (Array.isArray(msg.result)) {
			if (req.raise && msg.result[0] !== 0)
				L.raise('RPCError', 'RPC call to %s/%s failed with ubus code %d: %s',
					req.object, req.method, msg.result[0], this.getStatusText(msg.result[0]));

			ret = (msg.result.length > 1) ? msg.result[1] : msg.result[0];
		}

		if (req.expect) {
			for (var key in req.expect) {
				if (ret != null && key != '')
					ret = ret[key];
				if (ret == null || type.call(ret) != type.call(req.expect[key]))
					ret = req.expect[key];
				break;
			}
		}

		if (typeof req.filter == 'function') {
			req.priv[0] = ret;
			req.priv[1] = req.params;
			ret = req.filter.apply(this, req.priv);
		}

		return ret;
	},

	declare: function(options) {
		var rpc = this;

		return function() {
			var args = Array.prototype.slice.call(arguments),
			    params = {}, priv = [ undefined, undefined ], i = 0;

			if (Array.isArray(options.params))
				for (i = 0; i < options.params.length; i++)
					params[options.params[i]] = args[i];

			for (; i < args.length; i++)
				priv.push(args[i]);

			var req = {
				expect: options.expect, filter: options.filter, params: params, priv: priv,
				object: options.object, method: options.method, raise: options.reject
			};

			var msg = {
				jsonrpc: '2.0',
				id: rpcRequestID++,
				method: 'call',
				params: [ rpc.sessionID, options.object, options.method, params ]
			};

			return rpc.call(msg, options.object, options.method).then(function(res) {
				return rpc.handleReply(req, res);
			});
		};
	},

	getSessionID: function() { return this.sessionID },
	setSessionID: function(sid) { this.sessionID = sid },
	getBaseURL: function() { return this.baseURL },
	setBaseURL: function(url) { this.baseURL = url },

	getStatusText: function(statusCode) {
		switch (statusCode) {
		case 0: return _('Command OK');
		case 1: return _('Invalid command');
		case 2: return _('Invalid argument');
		case 3: return _('Method not found');
		case 4: return _('Resource not found');
		case 5: return _('No data received');
		case 6: return _('Permission denied');
		case 7: return _('Request timeout');
		case 8: return _('Not supported');
		case 9: return _('Unspecified error');
		case 10: return _('Connection lost');
		default: return _('Unknown error code');
		}
	}
});
