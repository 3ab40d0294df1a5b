// Several skinned meshes of one character (a body, clothes, hair: one SkinnedMeshRenderer each in Unity) as the
// one mesh the wire carries, all sub-meshes merged with their materials.
using System;
using System.Collections.Generic;
using System.Linq;

namespace AnyMoLe.Core
{
    public static class MeshMerge
    {
        /// <summary>The meshes (canonical, same skeleton of <paramref name="joints"/> joints) as one: vertices and
        /// triangles concatenated, influences padded to the largest count, materials and textures appended. A
        /// joint's inverse bind matrix comes from the first mesh whose vertices it moves (else the first mesh);
        /// normals, uvs and colours missing from some meshes are filled (up +Y, 0, opaque white).</summary>
        public static SkinnedMesh Merge(IList<SkinnedMesh> meshes, int joints)
        {
            if (meshes.Count == 1) return meshes[0];
            int k = meshes.Max(m => m.InfluencesPerVertex);
            bool normals = meshes.Any(m => m.Normals.Length > 0), uvs = meshes.Any(m => m.Uvs.Length > 0);
            bool colors = meshes.Any(m => m.Colors.Length > 0), slots = meshes.Count > 1 || meshes.Any(m => m.TriangleMaterials.Length > 0);
            var r = new SkinnedMesh { InfluencesPerVertex = k, InverseBindMatrices = (float[])meshes[0].InverseBindMatrices.Clone() };
            var pos = new List<float>(); var nrm = new List<float>(); var uv = new List<float>(); var col = new List<float>();
            var tri = new List<int>(); var triMat = new List<int>(); var ji = new List<int>(); var jw = new List<float>();
            var bound = new bool[joints];
            foreach (var m in meshes)
            {
                int v0 = pos.Count / 3, v = m.VertexCount, mat0 = r.Materials.Count, tex0 = r.Textures.Count;
                pos.AddRange(m.Positions);
                if (normals) nrm.AddRange(m.Normals.Length > 0 ? m.Normals : Repeat(new[] { 0f, 1f, 0f }, v));
                if (uvs) uv.AddRange(m.Uvs.Length > 0 ? m.Uvs : new float[v * 2]);
                if (colors) col.AddRange(m.Colors.Length > 0 ? m.Colors : Repeat(new[] { 1f, 1f, 1f, 1f }, v));
                tri.AddRange(m.Triangles.Select(i => i + v0));
                int triangles = m.Triangles.Length / 3;
                if (slots)
                    for (int t = 0; t < triangles; t++) triMat.Add(mat0 + (m.TriangleMaterials.Length > 0 ? m.TriangleMaterials[t] : 0));
                var moved = new bool[joints];
                for (int i = 0; i < v; i++)
                    for (int c = 0; c < k; c++)
                    {
                        bool has = c < m.InfluencesPerVertex;
                        int joint = has ? m.JointIndices[i * m.InfluencesPerVertex + c] : 0;
                        float w = has ? m.JointWeights[i * m.InfluencesPerVertex + c] : 0f;
                        ji.Add(joint);
                        jw.Add(w);
                        if (w > 0) moved[joint] = true;
                    }
                for (int j = 0; j < joints; j++)
                    if (moved[j] && !bound[j])
                    {
                        Array.Copy(m.InverseBindMatrices, j * 16, r.InverseBindMatrices, j * 16, 16);
                        bound[j] = true;
                    }
                r.Textures.AddRange(m.Textures);
                // A mesh without materials draws in the default grey: give it one slot of its own.
                if (m.Materials.Count == 0) r.Materials.Add(new Material());
                foreach (var mat in m.Materials)
                    r.Materials.Add(new Material { Name = mat.Name, BaseColor = mat.BaseColor, Texture = mat.Texture < 0 ? -1 : mat.Texture + tex0 });
            }
            r.Positions = pos.ToArray(); r.Normals = nrm.ToArray(); r.Uvs = uv.ToArray(); r.Colors = col.ToArray();
            r.Triangles = tri.ToArray(); r.TriangleMaterials = triMat.ToArray(); r.JointIndices = ji.ToArray(); r.JointWeights = jw.ToArray();
            return r;
        }

        static float[] Repeat(float[] item, int n)
        {
            var r = new float[item.Length * n];
            for (int i = 0; i < n; i++) Array.Copy(item, 0, r, i * item.Length, item.Length);
            return r;
        }
    }
}
