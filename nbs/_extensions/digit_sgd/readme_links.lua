-- nbdev_readme renders index.ipynb to GitHub markdown as README.md. There, a link to a chapter notebook
-- (`00_data.ipynb`) would be broken, so in any format but HTML it becomes the chapter's page on the docs site
-- (`<site-url>/data.html`: nbdev names a page after its notebook without the number). The site itself and
-- JupyterLab keep the notebook links, which Quarto and JupyterLab resolve themselves.
-- The site's address is `site-url` in nbdev.yml (a single-file render does not see the website's metadata).

local function site_url()
  local dir = (quarto.project and quarto.project.directory) or '.'
  local f = io.open(dir .. '/nbdev.yml', 'r')
  if f == nil then return nil end
  local text = f:read('*a'); f:close()
  local url = text:match('site%-url:%s*"?([^"%s]+)"?')
  return url and (url:gsub('/$', '') .. '/') or nil
end

function Link(el)
  if quarto.doc.is_format('html') then return nil end       -- the site: Quarto links the notebooks itself
  local stem, frag = el.target:match('^([%w_%-]+)%.ipynb(#?.*)$')
  if stem == nil then return nil end
  local site = site_url()
  if site == nil then return nil end
  el.target = site .. (stem == 'index' and '' or (stem:gsub('^%d+%w*_', '') .. '.html')) .. frag
  return el
end
