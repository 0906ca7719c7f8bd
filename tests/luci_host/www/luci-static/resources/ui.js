'use strict';
'require baseclass';
'require dom';

/*
 * Stand-in for the part of LuCI's ui class (luci-base ui.js) the wormhole views use,
 * written for the browser tests with the same observable behaviour:
 *
 *  - addNotification(title, children, ...classes) puts an .alert-message (with the
 *    classes and a Dismiss button) first in #maincontent and returns it; `children`
 *    goes through dom.append, so a bare string is markup there as upstream;
 *  - showModal(title, children) / hideModal();
 *  - createHandlerFn(ctx, fn, ...args) makes an event handler that ignores clicks while
 *    its previous promise is pending and marks the button busy (.spinning, disabled);
 *  - instantiateView(path) loads view.<path> (the loader instantiates it).
 */

var modal = null;

return baseclass.extend({
	addNotification: function(title, children /*, ...classes */) {
		var mc = document.querySelector('#maincontent') || document.body,
		    classes = Array.prototype.slice.call(arguments, 2);

		var msg = E('div', { 'class': 'alert-message fade-in', 'style': 'display:flex' }, [
			E('div', { 'style': 'flex:10' }),
			E('div', { 'style': 'flex:1 1 auto; display:flex' }, [
				E('button', {
					'class': 'btn',
					'style': 'margin-left:auto; margin-top:auto',
					'click': function(ev) {
						var n = dom.parent(ev.target, '.alert-message');
						if (n && n.parentNode)
							n.parentNode.removeChild(n);
					}
				}, [ _('Dismiss') ])
			])
		]);

		if (title != null)
			dom.append(msg.firstElementChild, E('h4', {}, title));

		dom.append(msg.firstElementChild, children);

		for (var i = 0; i < classes.length; i++)
			msg.classList.add(classes[i]);

		mc.insertBefore(msg, mc.firstElementChild);
		return msg;
	},

	showModal: function(title, children) {
		if (!modal)
			modal = document.body.appendChild(E('div', { 'id': 'modal_overlay' },
				E('div', { 'class': 'modal', 'role': 'dialog', 'aria-modal': 'true' })));

		var dlg = modal.firstElementChild;
		dom.content(dlg, null);
		if (title != null)
			dom.append(dlg, E('h4', {}, title));
		dom.append(dlg, children);
		document.body.classList.add('modal-overlay-active');
		return dlg;
	},

	hideModal: function() {
		document.body.classList.remove('modal-overlay-active');
	},

	createHandlerFn: function(ctx, fn /*, ...args */) {
		var args = this.varargs(arguments, 2);

		if (typeof fn == 'string')
			fn = ctx[fn];

		if (typeof fn != 'function')
			return null;

		return function(ev) {
			var t = ev.currentTarget;

			if (t.classList.contains('spinning'))
				return;

			t.classList.add('spinning');
			t.disabled = true;

			if (t.blur)
				t.blur();

			Promise.resolve(fn.apply(ctx, args.concat([ ev ]))).finally(function() {
				t.classList.remove('spinning');
				t.disabled = false;
			});
		};
	},

	instantiateView: function(path) {
		return L.require('view.' + path.replace(/\//g, '.')).catch(L.error);
	}
});
